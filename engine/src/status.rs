//! The status of a project: groups, slots, instances, health, outdated hashes, orphans, and
//! where each group stands (converged, progressing, paused, rolled back, degraded,
//! failing, unobserved). `tend status` prints it; `tend run` serves it on `/status` from
//! its last round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provider::{InstanceState, Observed, ObservedInstance};
use crate::reconcile::GroupPhase;
use crate::spec::{Spec, SpecHash};
use crate::store::{now_ms, Applied, FailedRollout};

/// One instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The provider's id.
    pub id: String,
    /// The provider that holds it.
    pub provider: String,
    /// Its slot.
    pub slot: String,
    /// How it is doing: running, starting, unhealthy or dead.
    pub state: InstanceState,
    /// `healthy`, `starting`, `unhealthy: why`, `no check`, or `-` for dead instances.
    pub health: String,
    /// Its spec hash.
    pub hash: String,
    /// True when its hash is not its group's.
    pub outdated: bool,
    /// Where it is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its own ports as reached on 127.0.0.1, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
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
    /// Where it stands, when known (from `tend run`, or a failed rollout in the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<GroupPhase>,
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
    /// Where its balancer listens, when the spec exposes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<String>,
    /// Its slots counted by how they are doing.
    #[serde(default)]
    pub counts: SlotCounts,
    /// Where its rolling update is, while instances are outdated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutProgress>,
}

/// A group's slots counted by how they are doing, each once (see [`GroupStatus::count`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCounts {
    /// Live, healthy (or with no check) and at the group's hash.
    pub healthy: usize,
    /// Live and waiting on its first healthy check.
    pub starting: usize,
    /// Live and failing its checks.
    pub unhealthy: usize,
    /// No live instance, a dead one left.
    pub dead: usize,
    /// Healthy at an older hash.
    pub outdated: usize,
    /// Allocated, with no instance at all.
    pub missing: usize,
    /// Waiting out a backoff.
    pub backoff: usize,
}

/// Where a group's rolling update is: `batch` of `batches`, `updated` of `wanted` healthy
/// at the new hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The batch under way, from 1.
    pub batch: usize,
    /// How many batches the update takes.
    pub batches: usize,
    /// Healthy instances at the group's hash.
    pub updated: usize,
    /// Instances the group wants.
    pub wanted: usize,
}

impl RolloutProgress {
    /// The progress of a rollout that replaces `batch_size` instances at a time, with
    /// `outdated` of `wanted` still at an older hash and `updated` healthy at the new one;
    /// none when nothing is outdated.
    pub fn of(
        wanted: usize,
        outdated: usize,
        updated: usize,
        batch_size: usize,
    ) -> Option<RolloutProgress> {
        if outdated == 0 || wanted == 0 {
            return None;
        }
        let size = batch_size.max(1);
        let batches = wanted.div_ceil(size);
        Some(RolloutProgress {
            batch: (updated / size + 1).min(batches),
            batches,
            updated,
            wanted,
        })
    }
}

impl GroupStatus {
    /// Counts its slots, each once, after `backoff` is known: a slot backing off, else by
    /// its live instance (unhealthy, starting, outdated, healthy, in that order when it has
    /// several), else dead when a dead instance is left in it, else missing.
    pub fn count(&mut self) {
        let mut worst: BTreeMap<&str, u8> = BTreeMap::new();
        for i in &self.instances {
            let rank = match i.state {
                InstanceState::Unhealthy => 5,
                InstanceState::Starting => 4,
                InstanceState::Running if i.outdated => 3,
                InstanceState::Running => 2,
                InstanceState::Dead => 1,
            };
            let at = worst.entry(i.slot.as_str()).or_default();
            *at = (*at).max(rank);
        }
        for slot in &self.missing {
            worst.entry(slot.as_str()).or_default();
        }
        let mut c = SlotCounts::default();
        for (slot, rank) in worst {
            if self.backoff.contains_key(slot) {
                c.backoff += 1;
                continue;
            }
            match rank {
                5 => c.unhealthy += 1,
                4 => c.starting += 1,
                3 => c.outdated += 1,
                2 => c.healthy += 1,
                1 => c.dead += 1,
                _ => c.missing += 1,
            }
        }
        self.counts = c;
    }
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
    /// Set by `tend run`: when the round this status comes from observed the instances,
    /// in milliseconds since the Unix epoch (events newer than this are not in it yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at_ms: Option<u64>,
    /// Every group of the spec.
    pub groups: Vec<GroupStatus>,
    /// Instances of the project that no group owns.
    pub orphans: Vec<InstanceStatus>,
    /// Set by `tend run`: its balancers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balancers: Vec<crate::balancer::BalancerStatus>,
    /// With an etcd store: who leads, and every replica with the serial it has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
    /// The tools the spec's providers drive, by provider: where each is and its version
    /// (`terraform: /usr/bin/terraform (Terraform 1.15.5)`), or why there is none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, String>,
}

/// The replicated controllers of a project kept in etcd.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Replicas {
    /// The leader, if there is one.
    pub leader: Option<crate::store::etcd::Member>,
    /// Every replica that announced itself and lives, the leader among them.
    pub members: Vec<crate::store::etcd::Member>,
}

/// What the health column says of an instance whose state was judged by its checks.
fn health_of(spec: &Spec, i: &ObservedInstance, last_error: Option<&str>) -> String {
    let has_check = spec
        .group(&i.tags.group)
        .is_some_and(|g| g.flavor.health.is_some());
    match i.state {
        InstanceState::Dead => dead_note(i),
        _ if !has_check => "no check".to_owned(),
        InstanceState::Running => "healthy".to_owned(),
        InstanceState::Starting => match last_error {
            Some(e) => format!("starting: {e}"),
            None => "starting".to_owned(),
        },
        InstanceState::Unhealthy => {
            format!("unhealthy: {}", last_error.unwrap_or("failing its checks"))
        }
    }
}

/// What is known of a dead instance: why it ended, and what it left running.
fn dead_note(i: &ObservedInstance) -> String {
    let mut notes = Vec::new();
    match i.ended.as_deref() {
        Some("oom") => notes.push("oom: killed for going over its memory limit".to_owned()),
        Some(other) => notes.push(other.to_owned()),
        None => {}
    }
    match i.remains {
        0 => {}
        1 => notes.push("1 process left running".to_owned()),
        n => notes.push(format!("{n} processes left running")),
    }
    if notes.is_empty() {
        "-".to_owned()
    } else {
        notes.join("; ")
    }
}

fn instance_status(
    provider: &str,
    i: &ObservedInstance,
    health: String,
    current: Option<&str>,
) -> InstanceStatus {
    InstanceStatus {
        id: i.id.clone(),
        provider: provider.to_owned(),
        slot: i.tags.slot.clone(),
        state: i.state,
        health,
        hash: i.tags.hash.clone(),
        outdated: current != Some(i.tags.hash.as_str()),
        address: i.address.clone(),
        ports: i.ports.clone(),
    }
}

/// Builds the status of `spec` from `observed`, whose instance states were judged by their
/// health checks; `last_error` gives an instance's last probe error.
pub fn build(
    spec: &Spec,
    observed: &Observed,
    applied: Option<&Applied>,
    last_error: &dyn Fn(&str) -> Option<String>,
) -> Status {
    let mut by_group: BTreeMap<&str, Vec<(&str, &ObservedInstance)>> = BTreeMap::new();
    for (provider, i) in observed.iter() {
        by_group
            .entry(i.tags.group.as_str())
            .or_default()
            .push((provider, i));
    }
    let mut groups = Vec::new();
    for group in &spec.groups {
        let hash = SpecHash::of(group).to_string();
        let mut instances: Vec<InstanceStatus> = by_group
            .remove(group.name.as_str())
            .unwrap_or_default()
            .into_iter()
            .map(|(provider, i)| {
                let health = health_of(spec, i, last_error(&i.id).as_deref());
                instance_status(provider, i, health, Some(&hash))
            })
            .collect();
        instances.sort_by_key(|i| (group.allocation.parse_slot(&i.slot), i.id.clone()));
        let live: std::collections::BTreeSet<&str> = instances
            .iter()
            .filter(|i| i.state.is_live())
            .map(|i| i.slot.as_str())
            .collect();
        let missing = group
            .slots()
            .into_iter()
            .map(|s| s.to_string())
            .filter(|s| !live.contains(s.as_str()))
            .collect();
        let outdated = instances
            .iter()
            .filter(|i| i.state.is_live() && i.outdated)
            .count();
        let updated = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running && !i.outdated)
            .count();
        let batch_size = crate::plan::rolling_batch(group).unwrap_or(group.allocation.len());
        let mut status = GroupStatus {
            name: group.name.clone(),
            wanted: group.allocation.len(),
            hash,
            phase: None,
            missing,
            instances,
            failing: None,
            backoff: BTreeMap::new(),
            expose: group.expose.as_ref().map(|e| e.listen.clone()),
            counts: SlotCounts::default(),
            rollout: RolloutProgress::of(group.allocation.len(), outdated, updated, batch_size),
        };
        status.count();
        groups.push(status);
    }
    let orphans = by_group
        .into_values()
        .flatten()
        .map(|(provider, i)| {
            let health = match i.state {
                InstanceState::Dead => dead_note(i),
                _ => "-".to_owned(),
            };
            instance_status(provider, i, health, None)
        })
        .collect();
    Status {
        project: spec.project.clone(),
        serial: applied.map(|a| a.serial),
        applied_ms_ago: applied.map(|a| now_ms().saturating_sub(a.applied_at)),
        observed_at_ms: None,
        groups,
        orphans,
        balancers: Vec::new(),
        replicas: None,
        tools: BTreeMap::new(),
    }
}

impl Replicas {
    /// The leader and the replicas, a line each.
    fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        match &self.leader {
            Some(leader) => {
                let _ = writeln!(out, "leader: {leader}");
            }
            None => {
                let _ = writeln!(out, "leader: none (no controller holds the project)");
            }
        }
        for m in &self.members {
            let role = if m.leading { "leading" } else { "standby" };
            let _ = writeln!(out, "  replica {m}: {role}, has seen serial {}", m.serial);
        }
    }
}

impl Status {
    /// The status without its instances and slot lists (each group keeps its counts): what
    /// a page shows of a project of any size before a group is opened. Copies no instance.
    pub fn brief(&self) -> Status {
        let groups = self
            .groups
            .iter()
            .map(|g| GroupStatus {
                name: g.name.clone(),
                wanted: g.wanted,
                hash: g.hash.clone(),
                phase: g.phase.clone(),
                missing: Vec::new(),
                instances: Vec::new(),
                failing: g.failing.clone(),
                backoff: BTreeMap::new(),
                expose: g.expose.clone(),
                counts: g.counts.clone(),
                rollout: g.rollout.clone(),
            })
            .collect();
        Status {
            project: self.project.clone(),
            serial: self.serial,
            applied_ms_ago: self.applied_ms_ago,
            observed_at_ms: self.observed_at_ms,
            groups,
            orphans: Vec::new(),
            balancers: Vec::new(),
            replicas: self.replicas.clone(),
            tools: self.tools.clone(),
        }
    }

    /// Marks groups whose rollout failed (from the store) as paused or rolled back.
    pub fn note_failed_rollouts(&mut self, failed: &BTreeMap<String, FailedRollout>) {
        for group in &mut self.groups {
            let Some(f) = failed.get(&group.name) else {
                continue;
            };
            if !f.holds(&SpecHash::from_tag(&group.hash)) {
                continue;
            }
            group.phase = Some(match f.paused_because() {
                Some(reason) => GroupPhase::Paused { reason },
                None => GroupPhase::RolledBack {
                    reason: f.reason.clone(),
                },
            });
        }
    }

    /// The status for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let applied = match (self.serial, self.applied_ms_ago) {
            (Some(serial), Some(ago)) => format!("serial {serial}, applied {}s ago", ago / 1000),
            _ => "never applied".to_owned(),
        };
        let _ = writeln!(out, "project {} ({applied})", self.project);
        for (provider, tool) in &self.tools {
            let _ = writeln!(out, "{provider}: {tool}");
        }
        if let Some(replicas) = &self.replicas {
            replicas.write_text(&mut out);
        }
        for g in &self.groups {
            let live = g.instances.iter().filter(|i| i.state.is_live()).count();
            let phase = g
                .phase
                .as_ref()
                .map(|p| format!(", {}", p.name().replace('_', " ")))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\ngroup {}: {live}/{} live, hash {}{phase}",
                g.name, g.wanted, g.hash
            );
            if let Some(reason) = g.phase.as_ref().and_then(GroupPhase::reason) {
                let name = g.phase.as_ref().map(GroupPhase::name).unwrap_or_default();
                let _ = writeln!(out, "  {}: {reason}", name.replace('_', " ").to_uppercase());
            }
            if let Some(r) = &g.rollout {
                let _ = writeln!(
                    out,
                    "  rolling: batch {} of {}, {}/{} updated",
                    r.batch, r.batches, r.updated, r.wanted
                );
            }
            if let Some(why) = g
                .failing
                .as_ref()
                .filter(|_| !matches!(g.phase, Some(GroupPhase::Failing { .. })))
            {
                let _ = writeln!(out, "  FAILING: {why}");
            }
            for i in &g.instances {
                let outdated = if i.outdated { " (outdated)" } else { "" };
                let mut address = i
                    .address
                    .as_deref()
                    .map(|a| format!(" at {a}"))
                    .unwrap_or_default();
                if i.ports.len() > 1 {
                    let ports: Vec<String> =
                        i.ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
                    address.push_str(&format!(" (ports {})", ports.join(" ")));
                }
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
            if let Some(listen) = &g.expose {
                let line = match self.balancers.iter().find(|b| b.group == g.name) {
                    Some(b) if b.listening && b.open.values().all(|n| *n == 0) => {
                        format!("balancer on {listen}: {} in rotation", b.in_rotation.len())
                    }
                    Some(b) if b.listening => format!(
                        "balancer on {listen}: {} in rotation, {} connections open",
                        b.in_rotation.len(),
                        b.open.values().sum::<usize>()
                    ),
                    Some(b) => format!(
                        "balancer on {listen}: NOT LISTENING: {}",
                        b.problem.as_deref().unwrap_or("not started")
                    ),
                    None => format!("balancer on {listen}: not served (only `tend run` serves it)"),
                };
                let _ = writeln!(out, "  {line}");
            }
        }
        if !self.orphans.is_empty() {
            let _ = writeln!(
                out,
                "\norphans (tagged with the project, owned by no group):"
            );
            for i in &self.orphans {
                let state = format!("{:?}", i.state).to_lowercase();
                let _ = writeln!(
                    out,
                    "  {} slot {} hash {} {state} {}",
                    i.id, i.slot, i.hash, i.health
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(slot: &str, state: InstanceState, outdated: bool) -> InstanceStatus {
        InstanceStatus {
            id: format!("i-{slot}-{state:?}"),
            provider: "sim".to_owned(),
            slot: slot.to_owned(),
            state,
            health: String::new(),
            hash: String::new(),
            outdated,
            address: None,
            ports: BTreeMap::new(),
        }
    }

    #[test]
    fn each_slot_counts_once_by_its_worst_live_instance() {
        let mut group = GroupStatus {
            name: "web".to_owned(),
            wanted: 6,
            hash: String::new(),
            phase: None,
            missing: vec!["2".to_owned(), "4".to_owned(), "5".to_owned()],
            instances: vec![
                instance("0", InstanceState::Dead, true),
                instance("0", InstanceState::Running, false),
                instance("1", InstanceState::Unhealthy, true),
                instance("2", InstanceState::Dead, false),
                instance("3", InstanceState::Running, true),
            ],
            failing: None,
            backoff: BTreeMap::from([("5".to_owned(), "next try in 4s".to_owned())]),
            expose: None,
            counts: SlotCounts::default(),
            rollout: None,
        };
        group.count();
        let c = &group.counts;
        assert_eq!(
            (
                c.healthy,
                c.unhealthy,
                c.dead,
                c.outdated,
                c.missing,
                c.backoff,
                c.starting
            ),
            (1, 1, 1, 1, 1, 1, 0)
        );
    }

    #[test]
    fn rollout_progress_counts_batches_by_healthy_new_instances() {
        assert_eq!(RolloutProgress::of(4, 0, 4, 1), None);
        let first = RolloutProgress::of(4, 3, 0, 1);
        assert_eq!(first.map(|r| (r.batch, r.batches)), Some((1, 4)));
        let third = RolloutProgress::of(10, 6, 4, 2);
        assert_eq!(
            third.map(|r| (r.batch, r.batches, r.updated)),
            Some((3, 5, 4))
        );
        // The last batch stays the last while its instances turn healthy.
        let last = RolloutProgress::of(5, 1, 4, 2);
        assert_eq!(last.map(|r| (r.batch, r.batches)), Some((3, 3)));
    }
}

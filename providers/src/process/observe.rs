//! Reading the process table as instances: live session leaders carrying the project's
//! tags, dead instances from the records (with what they left running and why they
//! ended), and leftovers of dead instances that no record names.

use std::collections::{BTreeMap, BTreeSet};

use engine::procfs::{self, ProcStat};
use engine::provider::{InstanceState, InstanceTags, ObservedInstance};

use super::cgroup::{Cgroups, InstanceCgroup};
use super::records::Record;
use super::spawn::{
    ENV_ADDRESS, ENV_FORMAT, ENV_GROUP, ENV_HASH, ENV_PORTS, ENV_PROJECT, ENV_SLOT,
};

/// Splits an instance id into pid and start ticks.
pub fn parse_id(id: &str) -> Option<(u32, u64)> {
    let (pid, ticks) = id.split_once('-')?;
    Some((pid.parse().ok()?, ticks.parse().ok()?))
}

/// Tags read from a process environment, when it carries the project's.
fn tags_in(env: &BTreeMap<String, String>, project: &str) -> Option<InstanceTags> {
    if env.get(ENV_PROJECT).map(String::as_str) != Some(project) {
        return None;
    }
    let tag = |k: &str| env.get(k).cloned().unwrap_or_default();
    Some(InstanceTags {
        project: tag(ENV_PROJECT),
        group: tag(ENV_GROUP),
        slot: tag(ENV_SLOT),
        hash: tag(ENV_HASH),
        ports: InstanceTags::parse_ports(&tag(ENV_PORTS)),
        format: InstanceTags::parse_format(env.get(ENV_FORMAT).map(String::as_str)),
    })
}

/// True when session leader `pid` (instance id `id`, not in the records) is a process of
/// another instance that started a session of its own: it is in a cgroup that a record
/// names, or in a tend cgroup with a process that started before it, or (without cgroups)
/// its parent carries the same tags.
fn member_of_another(
    pid: u32,
    stat: &ProcStat,
    id: &str,
    records: &BTreeMap<String, Record>,
) -> bool {
    let cgroup = Cgroups::of_process(pid);
    if !cgroup.is_empty() {
        let named = records
            .values()
            .any(|r| r.id != id && r.cgroups.iter().any(|d| cgroup.dirs.contains(d)));
        return named
            || cgroup.processes().into_iter().any(|other| {
                procfs::stat(other).is_some_and(|s| s.start_ticks < stat.start_ticks)
            });
    }
    let tags = |p: u32| {
        let env = environ(p);
        [ENV_PROJECT, ENV_GROUP, ENV_SLOT].map(|k| env.get(k).cloned())
    };
    stat.ppid > 1 && tags(stat.ppid) == tags(pid)
}

fn environ(pid: u32) -> BTreeMap<String, String> {
    procfs::environ(pid)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Every instance of `project` on this machine, from one pass over `/proc`; and the
/// processes that ended and wait to be reaped by their parent `reaper`.
pub fn instances(
    project: &str,
    records: &BTreeMap<String, Record>,
    reaper: u32,
) -> (Vec<ObservedInstance>, Vec<u32>) {
    let mut zombies = Vec::new();
    let table: Vec<(u32, ProcStat)> = procfs::pids()
        .into_iter()
        .filter_map(|pid| Some((pid, procfs::stat(pid)?)))
        .filter(|(pid, s)| {
            if s.is_zombie() && s.ppid == reaper {
                zombies.push(*pid);
            }
            !s.is_zombie()
        })
        .collect();
    let running: BTreeMap<u32, u64> = table.iter().map(|(p, s)| (*p, s.start_ticks)).collect();
    let mut found = Vec::new();
    // Live instances: each leads its own session; its children inherit the tags in their
    // environment but are part of it, not instances of their own, even one that started a
    // session of its own.
    for (pid, stat) in table.iter().filter(|(p, s)| s.session == *p as i32) {
        let id = format!("{pid}-{}", stat.start_ticks);
        // A process tend started (same pid and start time as its record) carries the
        // tags it was given: the record has them, so its environment need not be read.
        let (tags, address, labels) = match records.get(&id) {
            Some(r) if r.tags.project == project => {
                (r.tags.clone(), r.address.clone(), r.labels.clone())
            }
            Some(_) => continue,
            None => {
                let env = environ(*pid);
                match tags_in(&env, project) {
                    Some(tags) if !member_of_another(*pid, stat, &id, records) => {
                        (tags, env.get(ENV_ADDRESS).cloned(), BTreeMap::new())
                    }
                    _ => continue,
                }
            }
        };
        found.push(ObservedInstance {
            id,
            tags,
            labels,
            address,
            ports: BTreeMap::new(),
            state: InstanceState::Running,
            started_at: procfs::start_time_ms(stat.start_ticks),
            ended: None,
            remains: 0,
        });
    }
    // Sessions whose leader is gone, by session id: (members, earliest start).
    let mut orphaned: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for (pid, stat) in &table {
        let Ok(session) = u32::try_from(stat.session) else {
            continue;
        };
        if session == 0 || running.contains_key(&session) {
            continue;
        }
        orphaned
            .entry(session)
            .or_default()
            .push((*pid, stat.start_ticks));
    }
    // Dead instances the records name, with what they left running.
    let live: BTreeSet<String> = found.iter().map(|i| i.id.clone()).collect();
    for r in records.values().filter(|r| r.tags.project == project) {
        if live.contains(&r.id) {
            continue;
        }
        let Some((leader, ticks)) = parse_id(&r.id) else {
            continue;
        };
        let cgroup = InstanceCgroup::from_dirs(r.cgroups.clone());
        let remains = if cgroup.is_empty() {
            let members = orphaned.remove(&leader).unwrap_or_default();
            members.iter().filter(|(_, t)| *t >= ticks).count()
        } else {
            orphaned.remove(&leader);
            cgroup
                .processes()
                .into_iter()
                .filter(|p| running.contains_key(p))
                .count()
        };
        found.push(ObservedInstance {
            id: r.id.clone(),
            tags: r.tags.clone(),
            labels: r.labels.clone(),
            address: r.address.clone(),
            ports: r.tags.port_map(),
            state: InstanceState::Dead,
            started_at: r.started_at,
            ended: cgroup.oom_killed().then(|| "oom".to_owned()),
            remains: u32::try_from(remains).unwrap_or(u32::MAX),
        });
    }
    // Leftovers no record names (the state folder was deleted, say): processes of a dead
    // leader's session that carry the project's tags. Their id is the session and the
    // earliest start among them, which names the same processes to `destroy`.
    for (session, members) in orphaned {
        let Some(tags) = members
            .iter()
            .find_map(|(pid, _)| tags_in(&environ(*pid), project))
        else {
            continue;
        };
        let earliest = members.iter().map(|(_, t)| *t).min().unwrap_or(0);
        found.push(ObservedInstance {
            id: format!("{session}-{earliest}"),
            tags,
            labels: BTreeMap::new(),
            address: None,
            ports: BTreeMap::new(),
            state: InstanceState::Dead,
            started_at: procfs::start_time_ms(earliest),
            ended: None,
            remains: u32::try_from(members.len()).unwrap_or(u32::MAX),
        });
    }
    // A process is reached on its own ports.
    for instance in &mut found {
        instance.ports = instance.tags.port_map();
    }
    (found, zombies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_pid_and_start_ticks() {
        assert_eq!(parse_id("123-456"), Some((123, 456)));
        assert_eq!(parse_id("sim-1"), None);
    }
}

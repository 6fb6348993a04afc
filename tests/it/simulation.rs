//! Deterministic simulation of `tend run`, as FoundationDB and TigerBeetle test theirs.
//!
//! The real controller (reconciler, planner, executor, backoff, monitor) runs against the
//! real `sim` provider on a paused tokio runtime: time is virtual and every run of a seed
//! is the same run. A seeded schedule injects faults: kills, hangs, health flaps, slow or
//! failing provisions, destroys and describes, controller restarts, and spec changes (good
//! rollouts, bad deploys that never turn healthy, versions that crash after start,
//! scaling). After every change in the simulated world, invariants are checked against
//! the world itself, never against tend's own report:
//!
//! - no slot holds two live instances, except a surge pair within `max_surge`;
//! - nothing wanted is destroyed: a serving instance at its group's wanted version in an
//!   allocated slot goes only as a duplicate;
//! - a serving instance is replaced in place only while the group's other unavailable
//!   slots leave room under `max_unavailable`;
//! - no unhealthy instance is replaced while more than half of its group is unhealthy;
//! - a paused group makes no progress (no serving instance replaced, no instance of the
//!   failed version made in a new slot);
//! - once the faults stop, the project converges within a bound: every slot served at the
//!   wanted version, or a bad deploy paused or rolled back with the group still serving;
//! - a leader acts (creates or destroys through its fence) only while no newer leader
//!   exists: the schedule cuts the leader's lease off from etcd, or pauses its process past
//!   the lease's TTL, and then a standby takes over (see `sim_lease`).
//!
//! Odd seeds run the controller as it runs at scale: every death a provider tells is
//! healed at once from the last look, without a new one (from 500 instances on in real
//! use); even seeds look again for each.
//!
//! Faults caused by the schedule count against a group's budget only once they are older
//! than [`K_MS`] (tend learns of them through probes and events; a fault a second old may
//! not be known yet). A failing seed prints itself, its trace and how to replay it:
//! `TEND_SIM_SEED=<seed> cargo test --test it simulation::seeds_0_of_4 -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::clock::Clock;
use engine::controller::journal::Journal;
use engine::controller::{Controller, Options};
use engine::provider::{InstanceState, ProviderSet};
use engine::spec::{
    Allocation, Duration as SpecDuration, Flavor, Group, Health, OnFailure, PortValue, Probe,
    ProviderSpec, Rolling, Spec, SpecHash, UpdatePolicy,
};
use engine::store::{FailedRollout, Store};
use providers::sim::{Behaviour, CallFault, Change, Chaos, SimProvider, SimState, SimWorld};

use crate::sim_lease::{SimLease, FENCE_MS, TTL_MS};

/// The wall time the simulated world starts at.
const T0: u64 = 1_800_000_000_000;
/// How old a fault must be before it counts against a group's budget.
const K_MS: u64 = 30_000;
/// How long the faults go on.
const FAULT_MS: u64 = 240_000;
/// How long the project may take to converge once the faults stop.
const SETTLE_MS: u64 = 900_000;
/// How long it must stay converged to count.
const STABLE_MS: u64 = 20_000;

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Fault windows and versions the schedule set up, read by the chaos.
#[derive(Default)]
struct Faults {
    provisions_fail_until: u64,
    destroys_fail_until: u64,
    describes_fail_until: u64,
    describes_slow_until: u64,
    bad: BTreeSet<String>,
    crashy: BTreeSet<String>,
}

/// The seeded chaos the sim provider consults on every call.
struct SeededChaos {
    rng: Mutex<Rng>,
    faults: Mutex<Faults>,
    clock: Clock,
}

impl SeededChaos {
    fn roll<T>(&self, f: impl FnOnce(&mut Rng, &Faults, u64) -> T) -> T {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut rng, &faults, self.clock.epoch_ms())
    }
}

impl Chaos for SeededChaos {
    fn provision(&self, _group: &str, _slot: &str, _hash: &str) -> CallFault {
        self.roll(|rng, f, now| {
            if now < f.provisions_fail_until {
                CallFault::Fail(
                    Duration::from_millis(rng.between(0, 2_000)),
                    "quota exceeded".into(),
                )
            } else if rng.chance(5) {
                CallFault::Slow(Duration::from_millis(rng.between(3_000, 15_000)))
            } else {
                CallFault::Slow(Duration::from_millis(rng.between(20, 800)))
            }
        })
    }

    fn destroy(&self, _id: &str) -> CallFault {
        self.roll(|rng, f, now| {
            if now < f.destroys_fail_until {
                CallFault::Fail(
                    Duration::from_millis(rng.between(0, 1_000)),
                    "api error".into(),
                )
            } else {
                CallFault::Slow(Duration::from_millis(rng.between(10, 300)))
            }
        })
    }

    fn describe(&self) -> CallFault {
        self.roll(|rng, f, now| {
            if now < f.describes_fail_until {
                CallFault::Fail(
                    Duration::from_millis(rng.between(0, 500)),
                    "api down".into(),
                )
            } else if now < f.describes_slow_until {
                CallFault::Slow(Duration::from_millis(rng.between(1_000, 6_000)))
            } else {
                CallFault::Slow(Duration::from_millis(rng.between(1, 20)))
            }
        })
    }

    fn behaviour(&self, _group: &str, hash: &str) -> Behaviour {
        self.roll(|rng, f, _| Behaviour {
            ready_after_ms: rng.between(0, 2_500),
            works: !f.bad.contains(hash),
            dies_after_ms: f.crashy.contains(hash).then(|| rng.between(300, 2_500)),
        })
    }
}

/// One group's version in the schedule.
#[derive(Clone, Debug)]
struct Version {
    number: u32,
    bad: bool,
    crashy: bool,
    size: u32,
    max_unavailable: u32,
    max_surge: u32,
    min_ready_ms: u64,
    on_failure: OnFailure,
    recreate: bool,
}

fn health() -> Health {
    Health {
        probe: Probe::Tcp {
            port: PortValue::Number(1),
        },
        grace_period: SpecDuration::from_millis(1_000),
        interval: SpecDuration::from_millis(2_000),
        timeout: SpecDuration::from_millis(500),
        failures: 2,
    }
}

fn group(name: &str, v: &Version, ids: bool, depends_on: &[&str]) -> Group {
    let mut command = vec![name.to_owned(), format!("v{}", v.number)];
    if v.bad {
        command.push("--broken".into());
    }
    if v.crashy {
        command.push("--crashes".into());
    }
    Group {
        name: name.to_owned(),
        allocation: if ids {
            Allocation::Ids(vec!["a".into(), "b".into(), "c".into()])
        } else {
            Allocation::Size(v.size)
        },
        provider: ProviderSpec {
            kind: "sim".into(),
            props: Default::default(),
        },
        flavor: Flavor {
            command,
            health: Some(health()),
            ..Flavor::default()
        },
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        reads_groups: vec![],
        update: if v.recreate {
            UpdatePolicy::Recreate
        } else {
            UpdatePolicy::Rolling(Rolling {
                max_unavailable: v.max_unavailable,
                max_surge: v.max_surge,
                min_ready: SpecDuration::from_millis(v.min_ready_ms),
                health_timeout: SpecDuration::from_millis(20_000),
                on_failure: v.on_failure,
            })
        },
        origin: None,
        expose: None,
    }
}

/// The versions of the three groups.
#[derive(Clone, Debug)]
struct Versions {
    db: Version,
    web: Version,
    worker: Version,
}

impl Versions {
    fn spec(&self) -> Spec {
        Spec {
            project: "dst".into(),
            groups: vec![
                group("db", &self.db, true, &[]),
                group("web", &self.web, false, &["db"]),
                group("worker", &self.worker, false, &[]),
            ],
            ports: Default::default(),
        }
    }

    fn get(&mut self, name: &str) -> &mut Version {
        match name {
            "db" => &mut self.db,
            "web" => &mut self.web,
            _ => &mut self.worker,
        }
    }
}

/// The checks against the world, shared with the world's observer.
struct Checker {
    clock: Clock,
    store_dir: PathBuf,
    /// Specs committed, with when.
    specs: Mutex<Vec<(u64, Spec)>>,
    /// When the running controller started: what it has not had time to judge is not held
    /// against it.
    controller_since: Mutex<u64>,
    /// Every leader's epoch, with when it started to lead.
    leaders: Mutex<Vec<(i64, u64)>>,
    state: Mutex<CheckState>,
}

#[derive(Default)]
struct CheckState {
    violations: Vec<String>,
    trace: Vec<String>,
    /// When each slot last had a serving instance.
    last_served: BTreeMap<(String, String), u64>,
    /// Slots whose serving instance tend removed in place, until they serve again.
    tend_down: BTreeSet<(String, String)>,
    /// Since when each live instance has not served, while it does not.
    unserved_since: BTreeMap<String, u64>,
    /// When each instance was last seen not serving (from its start, until it is ready).
    last_unserved: BTreeMap<String, u64>,
    /// When each instance was last seen serving.
    last_serving: BTreeMap<String, u64>,
    /// Failed rollouts seen, by group, with the slots that had the failed version then.
    paused_slots: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Slots where a version was ever asked for, by (group, hash).
    asked: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Checker {
    fn now(&self) -> u64 {
        self.clock.epoch_ms()
    }

    fn trace(&self, line: String) {
        let at = self.now() - T0;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.trace.push(format!("{:>8.3}s {line}", at as f64 / 1000.0));
    }

    /// A leader's fence let a call through: no newer leader may exist by then.
    fn acted(&self, epoch: i64, what: String) {
        let now = self.now();
        let newer = self
            .leaders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(e, since)| *e > epoch && *since <= now)
            .copied();
        if let Some((e, since)) = newer {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.violation(
                &mut s,
                format!(
                    "epoch {epoch} acted ({what}) after epoch {e} took over at {:.3}s",
                    (since - T0) as f64 / 1000.0
                ),
            );
        }
    }

    fn violation(&self, s: &mut CheckState, line: String) {
        let at = self.now() - T0;
        let text = format!("{:>8.3}s VIOLATION {line}", at as f64 / 1000.0);
        s.trace.push(text.clone());
        s.violations.push(text);
    }

    /// The spec now, and every spec committed within the last `K_MS`.
    fn recent_specs(&self) -> Vec<Spec> {
        let now = self.now();
        let specs = self.specs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Spec> = specs
            .iter()
            .filter(|(at, _)| now.saturating_sub(*at) < K_MS)
            .map(|(_, s)| s.clone())
            .collect();
        if let Some((_, last)) = specs.last() {
            out.push(last.clone());
        }
        out
    }

    /// Since when every committed spec has allocated `group`/`slot`.
    fn allocated_since(&self, group: &str, slot: &str) -> u64 {
        let specs = self.specs.lock().unwrap_or_else(|p| p.into_inner());
        let mut since = T0;
        for (at, spec) in specs.iter() {
            let allocated = spec
                .group(group)
                .is_some_and(|g| g.allocation.contains(&g.allocation.parse_slot(slot)));
            if !allocated {
                since = u64::MAX;
            } else if since == u64::MAX {
                since = *at;
            }
        }
        since.min(self.now())
    }

    fn failed(&self) -> BTreeMap<String, FailedRollout> {
        Store::new(&self.store_dir)
            .failed_rollouts()
            .unwrap_or_default()
    }

    /// Updates when slots last served and since when instances have not.
    fn sample(&self, s: &mut CheckState, world: &SimState) {
        let now = self.now();
        for i in world.instances.values() {
            let key = (i.instance.tags.group.clone(), i.instance.tags.slot.clone());
            if i.serves(now) {
                s.last_served.insert(key.clone(), now);
                s.last_serving.insert(i.instance.id.clone(), now);
                s.tend_down.remove(&key);
                s.unserved_since.remove(&i.instance.id);
            } else if i.instance.state.is_live() {
                s.unserved_since.entry(i.instance.id.clone()).or_insert(now);
                s.last_unserved.insert(i.instance.id.clone(), now);
            }
        }
        let live: BTreeSet<&str> = world
            .instances
            .values()
            .filter(|i| i.instance.state.is_live())
            .map(|i| i.instance.id.as_str())
            .collect();
        s.unserved_since.retain(|id, _| live.contains(id.as_str()));
        s.last_unserved.retain(|id, _| live.contains(id.as_str()));
        s.last_serving.retain(|id, _| live.contains(id.as_str()));
    }

    /// Samples the world between changes: an instance turning ready changes nothing.
    fn tick(&self, world: &SimState) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.sample(&mut s, world);
    }

    fn on_change(&self, change: &Change, world: &SimState) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.sample(&mut s, world);
        if let Change::Hitting { .. } = change {
            // The world just before a fault: sampled, so a serving window that ends now
            // is seen however short it was.
            return;
        }
        let place = |id: &str| {
            world
                .instances
                .get(id)
                .map(|i| {
                    let t = &i.instance.tags;
                    let serves = if i.serves(self.now()) {
                        "serving"
                    } else {
                        "not serving"
                    };
                    format!(" ({}/{} at {}, {serves})", t.group, t.slot, t.hash)
                })
                .unwrap_or_default()
        };
        let line = match change {
            Change::Provisioning { group, slot, hash } => {
                format!("world: provisioning {group}/{slot} at {hash}")
            }
            Change::Provisioned { id } => format!("world: provisioned {id}{}", place(id)),
            Change::Destroying { id } => format!("world: destroying {id}{}", place(id)),
            Change::Destroyed { id } => format!("world: destroyed {id}"),
            Change::Fault { id, what } => format!("world: {id} {what}{}", place(id)),
            Change::Hitting { .. } => String::new(),
        };
        let at = self.now() - T0;
        s.trace.push(format!("{:>8.3}s {line}", at as f64 / 1000.0));
        let failed = self.failed();
        self.note_pauses(&mut s, world, &failed);
        match change {
            Change::Destroying { id } => self.check_destroy(&mut s, world, id, &failed),
            Change::Provisioning { group, slot, hash } => {
                self.check_provision(&mut s, world, group, slot, hash, &failed);
                s.asked
                    .entry((group.clone(), hash.clone()))
                    .or_default()
                    .insert(slot.clone());
            }
            _ => {}
        }
        self.check_slots(&mut s, world);
    }

    /// Remembers which slots held a group's failed version when the failure was first seen.
    fn note_pauses(
        &self,
        s: &mut CheckState,
        world: &SimState,
        failed: &BTreeMap<String, FailedRollout>,
    ) {
        for (group, f) in failed {
            let hash = f.hash.to_string();
            if s.paused_slots.get(group).is_some_and(|(h, _)| *h == hash) {
                continue;
            }
            // Slots that had the failed version, or were being given it, when it failed.
            let mut slots: BTreeSet<String> = world
                .instances
                .values()
                .filter(|i| i.instance.tags.group == *group && i.instance.tags.hash == hash)
                .map(|i| i.instance.tags.slot.clone())
                .collect();
            slots.extend(
                s.asked
                    .get(&(group.clone(), hash.clone()))
                    .cloned()
                    .unwrap_or_default(),
            );
            s.paused_slots.insert(group.clone(), (hash, slots));
        }
    }

    fn holds<'a>(
        failed: &'a BTreeMap<String, FailedRollout>,
        group: &Group,
    ) -> Option<&'a FailedRollout> {
        failed
            .get(&group.name)
            .filter(|f| f.holds(&SpecHash::of(group)))
    }

    fn check_destroy(
        &self,
        s: &mut CheckState,
        world: &SimState,
        id: &str,
        failed: &BTreeMap<String, FailedRollout>,
    ) {
        let now = self.now();
        let Some(victim) = world.instances.get(id) else {
            return;
        };
        if !victim.instance.state.is_live() {
            return;
        }
        let tags = &victim.instance.tags;
        let recent = self.recent_specs();
        let Some(current) = recent.last().and_then(|sp| sp.group(&tags.group)).cloned() else {
            return;
        };
        let slot = current.allocation.parse_slot(&tags.slot);
        let allocated = recent.iter().all(|sp| {
            sp.group(&tags.group)
                .is_some_and(|g| g.allocation.contains(&slot))
        });
        if !allocated {
            return;
        }
        // A duplicate may go when another instance of its slot serves (or served a moment
        // ago: a fault that hit it since may not be known yet).
        let served_by_another = world.instances.values().any(|i| {
            i.instance.id != id
                && i.instance.tags.group == tags.group
                && i.instance.tags.slot == tags.slot
                && i.instance.state.is_live()
                && (i.serves(now)
                    || s.last_serving
                        .get(&i.instance.id)
                        .is_some_and(|t| now.saturating_sub(*t) < K_MS))
        });
        if served_by_another {
            return;
        }
        let last_unserved = s
            .last_unserved
            .get(id)
            .copied()
            .unwrap_or(victim.instance.started_at)
            .max(victim.instance.started_at);
        let stable = victim.serves(now) && now.saturating_sub(last_unserved) >= K_MS;
        let failure = Self::holds(failed, &current);
        let wanted = match failure.and_then(|f| f.rolled_back_to()) {
            Some(before) => before.hash.to_string(),
            None => SpecHash::of(&current).to_string(),
        };
        let key = (tags.group.clone(), tags.slot.clone());
        if stable {
            let same_everywhere = recent.iter().all(|sp| {
                sp.group(&tags.group)
                    .is_some_and(|g| SpecHash::of(g).as_str() == tags.hash)
            });
            if tags.hash == wanted && same_everywhere {
                self.violation(
                    s,
                    format!(
                        "destroyed {id}, a serving instance of {}/{} at the wanted version",
                        tags.group, tags.slot
                    ),
                );
                return;
            }
            let paused = failure.is_some_and(|f| f.paused_because().is_some());
            if paused && tags.hash != wanted {
                self.violation(
                    s,
                    format!(
                        "paused group {} replaced serving instance {id} in slot {}",
                        tags.group, tags.slot
                    ),
                );
            }
            let recreate = recent.iter().any(|sp| {
                sp.group(&tags.group)
                    .is_some_and(|g| matches!(g.update, UpdatePolicy::Recreate))
            });
            if !recreate {
                let budget = recent
                    .iter()
                    .filter_map(|sp| sp.group(&tags.group))
                    .map(|g| match (&g.update, &g.allocation) {
                        (UpdatePolicy::Rolling(r), Allocation::Ids(_)) => r.max_unavailable.max(1),
                        (UpdatePolicy::Rolling(r), _) => r.max_unavailable,
                        (UpdatePolicy::Recreate, _) => u32::MAX,
                    })
                    .max()
                    .unwrap_or(0) as usize;
                let down: Vec<String> = current
                    .slots()
                    .into_iter()
                    .map(|sl| (tags.group.clone(), sl.to_string()))
                    .filter(|k| *k != key)
                    .filter(|k| {
                        let serving = world.instances.values().any(|i| {
                            i.instance.tags.group == k.0
                                && i.instance.tags.slot == k.1
                                && i.serves(now)
                        });
                        // Down since it last served, or since it was allocated (again).
                        let since = s
                            .last_served
                            .get(k)
                            .copied()
                            .unwrap_or(T0)
                            .max(self.allocated_since(&k.0, &k.1));
                        let long = now.saturating_sub(since) >= K_MS;
                        !serving && (s.tend_down.contains(k) || long)
                    })
                    .map(|k| k.1)
                    .collect();
                if down.len() + 1 > budget {
                    self.violation(
                        s,
                        format!(
                            "replaced serving {id} in {}/{} in place while {:?} were down (max_unavailable {budget})",
                            tags.group, tags.slot, down
                        ),
                    );
                }
            }
            s.tend_down.insert(key);
            return;
        }
        // A health replacement: never while more than half of the group is unhealthy.
        let failed_hashes: BTreeSet<String> = failed.values().map(|f| f.hash.to_string()).collect();
        if victim.serves(now) || tags.hash != SpecHash::of(&current).as_str() {
            return;
        }
        // Sick slots: a slot whose instance (or duplicate) has been unhealthy for long and
        // in which nothing serves. A duplicate on its way out beside a serving instance
        // leaves its slot well.
        let in_group = |i: &&providers::sim::SimInstance| {
            i.instance.tags.group == tags.group
                && i.instance.state.is_live()
                && current
                    .allocation
                    .contains(&current.allocation.parse_slot(&i.instance.tags.slot))
        };
        let serving_slots: BTreeSet<&str> = world
            .instances
            .values()
            .filter(in_group)
            .filter(|i| i.serves(now))
            .map(|i| i.instance.tags.slot.as_str())
            .collect();
        // A slot is sick when it has been without service for long: every instance in it
        // unserved for long (a duplicate long sick beside one that hung a moment ago does
        // not make its slot long sick).
        let mut slots: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
        for i in world.instances.values().filter(in_group) {
            let slot = i.instance.tags.slot.as_str();
            let long = s
                .unserved_since
                .get(&i.instance.id)
                .is_some_and(|since| now.saturating_sub(*since) >= K_MS);
            let counts = !failed_hashes.contains(&i.instance.tags.hash);
            let entry = slots.entry(slot).or_insert((true, false));
            entry.0 &= long;
            entry.1 |= counts;
        }
        let sick = slots
            .iter()
            .filter(|(slot, (all_long, counts))| {
                *all_long && *counts && !serving_slots.contains(*slot)
            })
            .count();
        let size = current.allocation.len();
        let since = *self
            .controller_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if sick >= 2 && sick * 2 > size && now.saturating_sub(since) >= K_MS {
            self.violation(
                s,
                format!(
                    "replaced unhealthy {id} of {} while {sick} of {size} had been unhealthy for long",
                    tags.group
                ),
            );
        }
    }

    /// A paused group makes no progress: once its rollout failed, no provision of the
    /// failed version starts, but to heal a slot that already had it; a rolled back group
    /// makes none at all.
    fn check_provision(
        &self,
        s: &mut CheckState,
        world: &SimState,
        group: &str,
        slot: &str,
        hash: &str,
        failed: &BTreeMap<String, FailedRollout>,
    ) {
        let recent = self.recent_specs();
        let Some(current) = recent.last().and_then(|sp| sp.group(group)) else {
            return;
        };
        let Some(f) = Self::holds(failed, current) else {
            return;
        };
        if hash != f.hash.as_str() {
            return;
        }
        let rolled_back = f.rolled_back_to().is_some() && f.rollback_failed.is_none();
        // A slot that had the failed version (then, or since, by an allowed step) gets it
        // again when its instance dies: a paused group heals at the hash instances had.
        let known = s
            .paused_slots
            .get(group)
            .is_some_and(|(h, slots)| h == hash && slots.contains(slot))
            || s.asked
                .get(&(group.to_owned(), hash.to_owned()))
                .is_some_and(|slots| slots.contains(slot));
        // A version that serves in the group (its rollout failed by accident: an instance
        // killed while it started) may fill a slot: that is no progress of a version that
        // does not work.
        let now = self.now();
        let stable = world.instances.values().any(|i| {
            i.instance.tags.group == group
                && i.instance.tags.hash == hash
                && (i.serves(now)
                    || s.last_serving
                        .get(&i.instance.id)
                        .copied()
                        .max(i.passed_check_at)
                        .is_some_and(|t| now.saturating_sub(t) < K_MS))
        });
        if rolled_back || (!known && !stable) {
            self.violation(
                s,
                format!(
                    "started making the failed version {hash} in {group}/{slot} after the rollout failed"
                ),
            );
        }
    }

    fn check_slots(&self, s: &mut CheckState, world: &SimState) {
        let mut live: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
        for i in world
            .instances
            .values()
            .filter(|i| i.instance.state.is_live())
        {
            live.entry((i.instance.tags.group.clone(), i.instance.tags.slot.clone()))
                .or_default()
                .push(&i.instance.id);
        }
        let recent = self.recent_specs();
        let mut doubled: BTreeMap<&str, usize> = BTreeMap::new();
        for ((group, slot), ids) in &live {
            if ids.len() > 2 {
                let line = format!("{group}/{slot} holds {} live instances: {ids:?}", ids.len());
                self.violation(s, line);
            } else if ids.len() == 2 {
                *doubled.entry(group.as_str()).or_default() += 1;
                let surge = recent
                    .iter()
                    .filter_map(|sp| sp.group(group))
                    .map(|g| match &g.update {
                        UpdatePolicy::Rolling(r) => r.max_surge,
                        UpdatePolicy::Recreate => 0,
                    })
                    .max()
                    .unwrap_or(0);
                if surge == 0 {
                    let line =
                        format!("{group}/{slot} holds two live instances without surge: {ids:?}");
                    self.violation(s, line);
                }
            }
        }
        for (group, n) in doubled {
            let surge = recent
                .iter()
                .filter_map(|sp| sp.group(group))
                .map(|g| match &g.update {
                    UpdatePolicy::Rolling(r) => r.max_surge as usize,
                    UpdatePolicy::Recreate => 0,
                })
                .max()
                .unwrap_or(0);
            if n > surge {
                let line =
                    format!("{group} has {n} slots with two live instances, max_surge {surge}");
                self.violation(s, line);
            }
        }
    }

    /// Where the world stands against the last spec: `None` when it is where it should be.
    fn unsettled(&self, world: &SimState) -> Option<String> {
        let now = self.now();
        let spec = self.specs.lock().ok()?.last().map(|(_, s)| s.clone())?;
        let failed = self.failed();
        for g in &spec.groups {
            let failure = Self::holds(&failed, g);
            let wanted = match failure.and_then(|f| f.rolled_back_to()) {
                Some(before) => before.hash.to_string(),
                None => SpecHash::of(g).to_string(),
            };
            let paused = failure.is_some_and(|f| f.paused_because().is_some());
            let mut down = 0;
            for slot in g.slots() {
                let slot = slot.to_string();
                let here: Vec<_> = world
                    .instances
                    .values()
                    .filter(|i| {
                        i.instance.tags.group == g.name
                            && i.instance.tags.slot == slot
                            && i.instance.state.is_live()
                    })
                    .collect();
                if here.len() != 1 {
                    return Some(format!(
                        "{}/{slot} has {} live instances",
                        g.name,
                        here.len()
                    ));
                }
                let serving = here[0].serves(now);
                if paused {
                    down += usize::from(!serving);
                } else if !serving || here[0].instance.tags.hash != wanted {
                    return Some(format!(
                        "{}/{slot} is not served at {wanted} ({} {})",
                        g.name, here[0].instance.id, here[0].instance.tags.hash
                    ));
                }
            }
            if paused {
                let room = match (&g.update, &g.allocation) {
                    (UpdatePolicy::Rolling(r), Allocation::Ids(_)) => {
                        r.max_unavailable.max(1) as usize
                    }
                    (UpdatePolicy::Rolling(r), _) => (r.max_unavailable as usize).max(1),
                    (UpdatePolicy::Recreate, _) => g.allocation.len(),
                };
                if down > room || (down == g.allocation.len() && down > 0) {
                    return Some(format!("paused group {} has {down} slots down", g.name));
                }
            }
            let extra = world.instances.values().any(|i| {
                i.instance.tags.group == g.name
                    && i.instance.state.is_live()
                    && !g
                        .allocation
                        .contains(&g.allocation.parse_slot(&i.instance.tags.slot))
            });
            if extra {
                return Some(format!("{} has instances beyond its allocation", g.name));
            }
        }
        None
    }
}

/// How one seed went.
struct Outcome {
    violations: Vec<String>,
    trace: Vec<String>,
    settled_after_ms: Option<u64>,
}

fn store_root() -> tempfile::TempDir {
    // tmpfs when there is one: a simulation fsyncs a lot, and durability is not under test.
    let shm = Path::new("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    made.unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn new_controller(
    world: &SimWorld,
    store: &Store,
    clock: Clock,
    journal: Arc<Journal>,
    quick_heals_from: usize,
    lease: Arc<SimLease>,
) -> Controller {
    let applied = store
        .last_applied()
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("nothing committed"));
    let mut providers = ProviderSet::default();
    providers.insert(Arc::new(SimProvider::with_world(world.clone())));
    let providers = engine::provider::fenced::fence(&providers, lease);
    Controller::new(
        applied.spec,
        applied.serial,
        store.clone(),
        providers,
        Arc::new(|_: &str| None),
        clock,
        journal,
        Options {
            resync: Duration::from_secs(10),
            parallelism: 10,
            report: false,
            listen: None,
            reload: None,
            ports: Default::default(),
            quick_heals_from,
            endpoint: None,
        },
    )
    .unwrap_or_else(|e| panic!("controller: {e}"))
}

type Running = (
    tokio::task::JoinHandle<Result<(), engine::controller::ControllerError>>,
    tokio::sync::watch::Sender<bool>,
    Arc<SimLease>,
);

/// Starts a controller that leads with a new lease (the epoch after the last).
fn start(
    world: &SimWorld,
    store: &Store,
    checker: &Arc<Checker>,
    journals: &mut Vec<Arc<Journal>>,
    quick_heals_from: usize,
) -> Running {
    let clock = checker.clock;
    let journal = Arc::new(Journal::new(clock, false));
    journals.push(journal.clone());
    let epoch = {
        let mut leaders = checker.leaders.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = leaders.last().map_or(1, |(e, _)| e + 1);
        leaders.push((epoch, clock.epoch_ms()));
        epoch
    };
    let acted = {
        let checker = checker.clone();
        Arc::new(move |epoch, what| checker.acted(epoch, what))
    };
    let lease = SimLease::start(epoch, clock, acted);
    let controller = new_controller(
        world,
        store,
        clock,
        journal,
        quick_heals_from,
        lease.clone(),
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    (tokio::spawn(controller.run(rx)), tx, lease)
}

/// Sleeps until `at` on the simulated clock (at once when it has passed).
async fn sleep_until_ms(clock: Clock, at: u64) {
    let now = clock.epoch_ms();
    if at > now {
        tokio::time::sleep(Duration::from_millis(at - now)).await;
    }
}

/// Runs one seed on a paused runtime.
fn run_seed(seed: u64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(simulate(seed))
}

async fn simulate(seed: u64) -> Outcome {
    let clock = Clock::starting_at(T0);
    let dir = store_root();
    let store = Store::new(dir.path());
    let mut rng = Rng(seed);
    // Odd seeds heal every death from the last look, as `tend run` does at scale.
    let quick_heals_from = if seed % 2 == 1 {
        0
    } else {
        engine::reconcile::QUICK_HEALS_FROM
    };
    let chaos = Arc::new(SeededChaos {
        rng: Mutex::new(Rng(seed ^ 0x5eed)),
        faults: Mutex::new(Faults::default()),
        clock,
    });
    let checker = Arc::new(Checker {
        clock,
        store_dir: dir.path().to_owned(),
        specs: Mutex::new(Vec::new()),
        controller_since: Mutex::new(T0),
        leaders: Mutex::new(Vec::new()),
        state: Mutex::new(CheckState::default()),
    });
    let observer_checker = checker.clone();
    let world = SimWorld::in_memory(
        clock,
        chaos.clone(),
        Some(Arc::new(move |change, state| {
            observer_checker.on_change(change, state)
        })),
    );
    let base = |size| Version {
        number: 1,
        bad: false,
        crashy: false,
        size,
        max_unavailable: 1,
        max_surge: 0,
        min_ready_ms: 0,
        on_failure: OnFailure::Pause,
        recreate: false,
    };
    let mut versions = Versions {
        db: base(3),
        web: Version {
            max_surge: rng.below(2) as u32,
            ..base(rng.between(3, 6) as u32)
        },
        worker: Version {
            max_unavailable: rng.between(1, 2) as u32,
            ..base(rng.between(2, 4) as u32)
        },
    };
    let commit = |versions: &Versions, why: &str| {
        let spec = versions.spec();
        let serial = store.commit(&spec).map(|a| a.serial).unwrap_or(0);
        checker
            .specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((clock.epoch_ms(), spec));
        checker.trace(format!("schedule: serial {serial}: {why}"));
    };
    commit(&versions, "first spec");
    let mut journals = Vec::new();
    let mut running = start(&world, &store, &checker, &mut journals, quick_heals_from);
    // Leaders that lost their lease: stopped, their running actions finishing.
    let mut deposed: Vec<Running> = Vec::new();
    let sampler = {
        let (world, checker) = (world.clone(), checker.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(state) = world.read(|s, _| s.clone()) {
                    checker.tick(&state);
                }
            }
        })
    };

    // Up first, before any fault.
    tokio::time::sleep(Duration::from_secs(60)).await;

    let fault_end = clock.epoch_ms() + FAULT_MS;
    while clock.epoch_ms() < fault_end {
        tokio::time::sleep(Duration::from_millis(rng.between(500, 8_000))).await;
        let now = clock.epoch_ms();
        let roll = rng.below(100);
        let live: Vec<String> = world
            .instances()
            .into_iter()
            .filter(|i| i.instance.state == InstanceState::Running)
            .map(|i| i.instance.id)
            .collect();
        let pick = |rng: &mut Rng| -> Option<String> {
            (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize].clone())
        };
        match roll {
            0..=24 => {
                if let Some(id) = pick(&mut rng) {
                    checker.trace(format!("schedule: kill {id}"));
                    world.kill(&id);
                }
            }
            25..=31 => {
                if let Some(id) = pick(&mut rng) {
                    let ms = rng.between(3_000, 40_000);
                    checker.trace(format!("schedule: hang {id} for {ms} ms"));
                    world.set_hung(&id, true);
                    let w = world.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        w.set_hung(&id, false);
                    });
                }
            }
            32..=38 => {
                if let Some(id) = pick(&mut rng) {
                    let ms = rng.between(2_000, 30_000);
                    checker.trace(format!("schedule: checks of {id} fail for {ms} ms"));
                    world.set_flapping(&id, true);
                    let w = world.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        w.set_flapping(&id, false);
                    });
                }
            }
            39..=42 => {
                let ms = rng.between(5_000, 40_000);
                checker.trace(format!("schedule: provisions fail for {ms} ms"));
                chaos
                    .faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .provisions_fail_until = now + ms;
            }
            43..=45 => {
                let ms = rng.between(5_000, 20_000);
                checker.trace(format!("schedule: destroys fail for {ms} ms"));
                chaos
                    .faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .destroys_fail_until = now + ms;
            }
            46..=48 => {
                let ms = rng.between(3_000, 20_000);
                checker.trace(format!("schedule: describes fail for {ms} ms"));
                chaos
                    .faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .describes_fail_until = now + ms;
            }
            49..=50 => {
                let ms = rng.between(5_000, 30_000);
                checker.trace(format!("schedule: describes are slow for {ms} ms"));
                chaos
                    .faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .describes_slow_until = now + ms;
            }
            51..=56 => {
                checker.trace("schedule: controller killed and restarted".into());
                running.0.abort();
                let _ = (&mut running.0).await;
                running = start(&world, &store, &checker, &mut journals, quick_heals_from);
                *checker
                    .controller_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = now;
            }
            91..=94 => {
                // Cut off from etcd: its keep-alives go unanswered while it runs on. It stops
                // acting once its fence passes, and stops itself as the real replica does;
                // a standby leads once the lease's TTL is over.
                let lease = running.2.clone();
                checker.trace(format!(
                    "schedule: the leader (epoch {}) is cut off from etcd",
                    lease.epoch()
                ));
                lease.cut_off();
                let expires = lease.expires_at();
                sleep_until_ms(clock, expires - TTL_MS + FENCE_MS).await;
                let _ = running.1.send(true);
                sleep_until_ms(clock, expires).await;
                let next = start(&world, &store, &checker, &mut journals, quick_heals_from);
                deposed.push(std::mem::replace(&mut running, next));
                checker.trace(format!("schedule: epoch {} leads", running.2.epoch()));
                *checker
                    .controller_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = clock.epoch_ms();
            }
            95..=98 => {
                // Its whole process paused past the TTL: a standby leads meanwhile; when it
                // resumes its calls find the fence passed, and it steps down.
                let ms = rng.between(12_000, 40_000);
                let lease = running.2.clone();
                checker.trace(format!(
                    "schedule: the leader (epoch {}) is paused for {ms} ms",
                    lease.epoch()
                ));
                lease.set_paused(true);
                let resume_at = now + ms;
                sleep_until_ms(clock, lease.expires_at()).await;
                let next = start(&world, &store, &checker, &mut journals, quick_heals_from);
                let old = std::mem::replace(&mut running, next);
                checker.trace(format!("schedule: epoch {} leads", running.2.epoch()));
                *checker
                    .controller_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = clock.epoch_ms();
                sleep_until_ms(clock, resume_at).await;
                checker.trace(format!("schedule: epoch {} resumes", lease.epoch()));
                lease.set_paused(false);
                let _ = old.1.send(true);
                deposed.push(old);
            }
            57..=68 => {
                let name = ["db", "web", "worker"][rng.below(3) as usize];
                let v = versions.get(name);
                v.number += 1;
                v.bad = false;
                v.crashy = false;
                v.min_ready_ms = rng.between(0, 3_000);
                v.on_failure = if rng.chance(50) {
                    OnFailure::Rollback
                } else {
                    OnFailure::Pause
                };
                commit(&versions, &format!("a good version of {name}"));
            }
            69..=74 => {
                let name = ["db", "web", "worker"][rng.below(3) as usize];
                bad_version(&mut versions, &mut rng, &chaos, name);
                commit(
                    &versions,
                    &format!("a bad version of {name} (never healthy)"),
                );
            }
            75..=78 => {
                let name = ["web", "worker"][rng.below(2) as usize];
                let v = versions.get(name);
                v.number += 1;
                v.bad = false;
                v.crashy = true;
                let hash = SpecHash::of(&group(name, v, false, &[])).to_string();
                chaos
                    .faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .crashy
                    .insert(hash);
                commit(
                    &versions,
                    &format!("a version of {name} that crashes after start"),
                );
            }
            79..=86 => {
                let name = ["web", "worker"][rng.below(2) as usize];
                let size = rng.between(1, 6) as u32;
                versions.get(name).size = size;
                commit(&versions, &format!("{name} scaled to {size}"));
            }
            87..=90 => {
                let v = &mut versions.worker;
                v.recreate = !v.recreate;
                commit(&versions, "worker switches between rolling and recreate");
            }
            _ => {}
        }
    }

    // The faults stop: hangs and flaps end, windows close, and the last spec is either good
    // everywhere or a bad deploy of web, which must end paused or rolled back.
    {
        let mut f = chaos.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.provisions_fail_until = 0;
        f.destroys_fail_until = 0;
        f.describes_fail_until = 0;
        f.describes_slow_until = 0;
    }
    for i in world.instances() {
        if i.hung {
            world.set_hung(&i.instance.id, false);
        }
        if i.flapping {
            world.set_flapping(&i.instance.id, false);
        }
    }
    for name in ["db", "web", "worker"] {
        let v = versions.get(name);
        if v.bad || v.crashy {
            v.number += 1;
            v.bad = false;
            v.crashy = false;
        }
    }
    commit(&versions, "calm; good everywhere");
    let calm_at = clock.epoch_ms();
    let mut outcome = settle(&world, &checker, calm_at).await;
    let mut settled_after_ms = outcome.as_ref().ok().copied();
    // Now and then a bad deploy on a calm, converged project: it must end paused or rolled
    // back with the group still serving, within the same bound.
    if outcome.is_ok() && rng.chance(30) {
        bad_version(&mut versions, &mut rng, &chaos, "web");
        commit(&versions, "calm; a bad version of web");
        outcome = settle(&world, &checker, clock.epoch_ms()).await;
        settled_after_ms = settled_after_ms.max(outcome.as_ref().ok().copied());
    }
    let last_reason = outcome.err().unwrap_or_default();
    running.0.abort();
    let _ = running.0.await;
    for old in deposed {
        old.0.abort();
        let _ = old.0.await;
    }
    sampler.abort();
    let mut state = checker.state.lock().unwrap_or_else(|p| p.into_inner());
    if settled_after_ms.is_none() {
        let line = format!(
            "not converged {} s after the faults stopped: {last_reason}",
            SETTLE_MS / 1000
        );
        state.trace.push(line.clone());
        state.violations.push(line);
    }
    // tend's own account, merged in by time: what it decided, beside what happened.
    let mut trace = std::mem::take(&mut state.trace);
    for (n, journal) in journals.iter().enumerate() {
        for line in journal.recent_ndjson().lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let at = event["at_ms"].as_u64().unwrap_or(T0) - T0;
            let target = match (
                event["group"].as_str().unwrap_or(""),
                event["slot"].as_str().unwrap_or(""),
            ) {
                ("", _) => String::new(),
                (g, "") => format!(" {g}"),
                (g, s) => format!(" {g}/{s}"),
            };
            trace.push(format!(
                "{:>8.3}s tend#{n}: {}{target}: {}",
                at as f64 / 1000.0,
                event["kind"].as_str().unwrap_or(""),
                event["message"].as_str().unwrap_or("")
            ));
        }
    }
    trace.sort_by(|a, b| {
        let t = |l: &str| {
            l.split('s')
                .next()
                .and_then(|x| x.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        t(a).total_cmp(&t(b))
    });
    Outcome {
        violations: std::mem::take(&mut state.violations),
        trace,
        settled_after_ms,
    }
}

/// Waits until the world is where the last spec wants it, and stays there for
/// [`STABLE_MS`]; how long that took, or why it is not, after [`SETTLE_MS`].
async fn settle(world: &SimWorld, checker: &Checker, from: u64) -> Result<u64, String> {
    let clock = checker.clock;
    let mut settled_since: Option<u64> = None;
    let mut last_reason = String::new();
    while clock.epoch_ms() < from + SETTLE_MS {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let state = world.read(|s, _| s.clone()).unwrap_or_default();
        match checker.unsettled(&state) {
            None => {
                let since = *settled_since.get_or_insert(clock.epoch_ms());
                if clock.epoch_ms() - since >= STABLE_MS {
                    return Ok(since - from);
                }
            }
            Some(why) => {
                settled_since = None;
                last_reason = why;
            }
        }
    }
    Err(last_reason)
}

/// Makes the next version of `name` one that never turns healthy.
fn bad_version(versions: &mut Versions, rng: &mut Rng, chaos: &SeededChaos, name: &str) {
    let ids = name == "db";
    let v = versions.get(name);
    v.number += 1;
    v.bad = true;
    v.crashy = false;
    v.on_failure = if rng.chance(50) {
        OnFailure::Rollback
    } else {
        OnFailure::Pause
    };
    let hash = SpecHash::of(&group(name, v, ids, &[])).to_string();
    chaos
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .bad
        .insert(hash);
}

fn seeds() -> u64 {
    std::env::var("TEND_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

/// Runs every `share`-th seed from `first`; panics with the first failing seed's trace.
/// With `TEND_SIM_SEED` set, the first share replays that seed alone and prints its trace.
fn run_share(first: u64, share: u64) {
    if let Some(seed) = std::env::var("TEND_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        if first == 0 {
            let outcome = run_seed(seed);
            for line in &outcome.trace {
                println!("{line}");
            }
            assert!(outcome.violations.is_empty(), "{:#?}", outcome.violations);
        }
        return;
    }
    let mut slowest = 0;
    for seed in (first..seeds()).step_by(share as usize) {
        let quiet = crate::harness::QUIET
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let outcome = run_seed(seed);
        drop(quiet);
        if !outcome.violations.is_empty() {
            let tail: Vec<&String> = outcome.trace.iter().rev().take(120).collect();
            let tail: Vec<&String> = tail.into_iter().rev().collect();
            panic!(
                "seed {seed} broke {} invariant(s):\n{}\n\nlast lines of its trace:\n{}\n\nreplay: TEND_SIM_SEED={seed} cargo test --test it simulation::seeds_0_of_4 -- --nocapture",
                outcome.violations.len(),
                outcome.violations.join("\n"),
                tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
            );
        }
        slowest = slowest.max(outcome.settled_after_ms.unwrap_or(0));
    }
    eprintln!(
        "seeds {first}.. step {share}: converged at most {} s after the faults stopped",
        slowest / 1000
    );
}

#[test]
fn seeds_0_of_4() {
    run_share(0, 4);
}

#[test]
fn seeds_1_of_4() {
    run_share(1, 4);
}

#[test]
fn seeds_2_of_4() {
    run_share(2, 4);
}

#[test]
fn seeds_3_of_4() {
    run_share(3, 4);
}

#[test]
fn a_seed_replays_exactly() {
    let first = run_seed(7);
    let again = run_seed(7);
    assert_eq!(first.trace, again.trace);
    assert!(first.trace.len() > 100, "{} lines", first.trace.len());
}

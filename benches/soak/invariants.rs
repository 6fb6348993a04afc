//! The promises checked on every look at the OS and the engine:
//!
//! - never more live instances of a group than its size plus surge (the larger size while
//!   a scale is under way);
//! - never two live instances in a slot, but a surge pair within `max_surge`;
//! - during a rollout with no fault on that group, never fewer healthy than size minus
//!   `max_unavailable` (a bad deploy included: it must never take the group down);
//! - converged: every slot of every group one healthy instance at the wanted version, or
//!   after a bad deploy, the group still serving (rolled back, or paused within its budget,
//!   whatever its `on_failure`);
//!   a group whose rollout stopped under faults serves within its budget at any version.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::{Shape, Wanted};
use super::world::World;

/// A broken promise.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Seconds since the soak began.
    pub at_s: f64,
    pub what: String,
}

/// Groups whose rollout is under way with no fault on them yet.
#[derive(Default)]
pub struct Rollouts {
    clean: BTreeSet<&'static str>,
    /// Groups a fault touched since the project last converged: a rollout that starts
    /// after one is not judged either.
    touched: BTreeSet<String>,
}

impl Rollouts {
    /// A new version of `group` was handed over.
    pub fn start(&mut self, group: &'static str) {
        if !self.touched.contains(group) {
            self.clean.insert(group);
        }
    }

    /// A fault touched `group`: its rollout is no longer judged.
    pub fn faulted(&mut self, group: &str) {
        self.clean.retain(|g| *g != group);
        self.touched.insert(group.to_owned());
    }

    /// Every rollout ended (the project converged).
    pub fn end_all(&mut self) {
        self.clean.clear();
        self.touched.clear();
    }
}

/// Checks the promises that hold at every moment; `before` is the shape a change is
/// moving away from (its sizes still count until the project converges).
pub fn check(world: &World, now: &Shape, before: &Shape, rollouts: &Rollouts) -> Vec<String> {
    let mut broken = Vec::new();
    let mut names: BTreeSet<&str> = now.all().iter().map(|g| g.name).collect();
    names.extend(before.all().iter().map(|g| g.name));
    for name in names {
        let (a, b) = (now.group(name), before.group(name));
        let Some(g) = a.clone().or_else(|| b.clone()) else {
            continue;
        };
        if g.docker && !world.engine_up {
            continue;
        }
        let size = a
            .as_ref()
            .map_or(0, |g| g.size)
            .max(b.as_ref().map_or(0, |g| g.size));
        let surge = g.max_surge;
        let live = world.of(name).count() as u32;
        if live > size + surge {
            broken.push(format!(
                "{name}: {live} live instances, more than size {size} + surge {surge}"
            ));
        }
        let mut per_slot: BTreeMap<&str, usize> = BTreeMap::new();
        for i in world.of(name) {
            *per_slot.entry(&i.slot).or_default() += 1;
        }
        let doubled = per_slot.values().filter(|n| **n == 2).count() as u32;
        for (slot, n) in &per_slot {
            if *n > 2 || (*n == 2 && surge == 0) {
                broken.push(format!("{name}/{slot}: {n} live instances in one slot"));
            }
        }
        if doubled > surge {
            broken.push(format!(
                "{name}: {doubled} slots hold two live instances, max_surge {surge}"
            ));
        }
        if let Some(a) = &a {
            if rollouts.clean.contains(name) {
                let healthy = world.of(name).filter(|i| i.healthy).count() as u32;
                let floor = a.size.saturating_sub(a.max_unavailable);
                if healthy < floor {
                    broken.push(format!(
                        "{name}: {healthy} healthy during its rollout, fewer than size {} - max_unavailable {}",
                        a.size, a.max_unavailable
                    ));
                }
            }
        }
    }
    broken
}

/// True when every group is where it should settle: see the module's doc. A group whose
/// engine is down is never settled.
pub fn converged(world: &World, shape: &Shape) -> bool {
    let wanted = shape.all();
    let known: BTreeSet<&str> = wanted.iter().map(|g| g.name).collect();
    if world
        .instances
        .iter()
        .any(|i| !known.contains(i.group.as_str()))
    {
        return false;
    }
    wanted.iter().all(|g| settled(world, g))
}

fn settled(world: &World, g: &Wanted) -> bool {
    if g.docker && !world.engine_up {
        return false;
    }
    let live: Vec<_> = world.of(g.name).collect();
    if g.stalled && !g.bad {
        let serving = live.iter().filter(|i| i.healthy).count() as u32;
        return serving >= g.size.saturating_sub(g.max_unavailable)
            && live.len() as u32 <= g.size + g.max_surge;
    }
    if g.bad {
        let label = g.label();
        let serving = live
            .iter()
            .filter(|i| i.healthy && i.version != label)
            .count() as u32;
        // Rolled back (every slot serving the old version), or paused within its budget:
        // tend rolls back only to a version it holds stable, one whose new instances did
        // not lately die soon after they started. A kill of a fresh instance makes its
        // version unstable for a while, and a bad deploy then pauses even under
        // `on_failure = "rollback"`.
        let rolled_back = serving == g.size && live.len() as u32 == g.size;
        let paused = serving >= g.size.saturating_sub(g.max_unavailable)
            && live.len() as u32 <= g.size + g.max_surge;
        return rolled_back || paused;
    }
    let label = g.label();
    let slots = g.slots();
    live.len() == slots.len()
        && slots.iter().all(|slot| {
            let mut in_slot = live.iter().filter(|i| &i.slot == slot);
            matches!((in_slot.next(), in_slot.next()), (Some(i), None) if i.healthy && i.version == label)
        })
}

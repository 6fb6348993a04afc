//! The planner rules of DESIGN.md, applied group by group in dependency order.
//!
//! Every command that plans calls [`plan`]: `plan` and `apply` once per look at the
//! instances, `tend run` every round, `tend test` against simulated states. The same
//! inputs give the same plan, byte for byte.
//!
//! Pacing lives here, so `apply` and `run` keep the same promises: an action is startable
//! only when nothing it waits for (`after`, and the barriers in `after_barriers`) is left
//! and it has no `waits`. A wait on another group's actions, or on several actions of its
//! own group, is a barrier, made once and shared by every action that waits on it; a wait
//! on one action of its own group is a direct edge in `after`. Actions already running
//! are part of the input (`in_flight`) and of the output, so what comes after them waits
//! for them, and the budgets count them:
//! - dead and missing instances are always replaced at once;
//! - at most `max(max_unavailable, 1)` unhealthy instances of a group are replaced at once,
//!   and none while more than half of the group is unhealthy (the group is *degraded*);
//! - an outdated instance that serves is replaced only while the group has fewer than
//!   `max_unavailable` unavailable slots (dead, missing, starting, unhealthy, or being
//!   made), or with surge, in batches: the next batch starts when the last one is done;
//! - a paused group replaces nothing; it heals dead instances at the hash they had (at the
//!   hash the group serves with, when theirs serves nowhere).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::model::{Action, ActionKind, Barrier, BarrierKind, Expectation, Expected, Hold, Plan};
use crate::graph::GroupGraph;
use crate::provider::{InstanceState, Observed, ObservedInstance};
use crate::spec::{Allocation, Group, Slot, Spec, SpecHash, UpdatePolicy};

/// A group whose rollout failed and that makes no progress until a new spec is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paused {
    /// The hash it is kept at (the spec's, or the version it rolled back to).
    pub hash: SpecHash,
    /// The spec's hash, whose rollout failed: never made in a new slot.
    pub failed: SpecHash,
    /// Why it stopped.
    pub reason: String,
    /// Hashes whose templates the executor still has: a dead instance is healed at its
    /// own hash when it is one of these.
    pub known: BTreeSet<SpecHash>,
    /// The version before the failed one, when known: an empty slot is filled with it
    /// when no live instance shows a better choice.
    pub fallback: Option<SpecHash>,
    /// Versions the group's instances serve with stably (running and passing their checks
    /// for a while), most instances first: what empty slots of the paused group are made
    /// from. A version whose rollout failed by accident (an instance killed while it
    /// started) may well be one of them; one that does not work never is.
    pub serving: Vec<SpecHash>,
}

static NO_PAUSES: BTreeMap<String, Paused> = BTreeMap::new();

/// Everything the planner reads.
#[derive(Clone, Copy)]
pub struct PlanInput<'a> {
    /// The desired state.
    pub spec: &'a Spec,
    /// Its group graph (built from `spec`).
    pub graph: &'a GroupGraph,
    /// What the providers report, with health judged into each instance's state.
    pub observed: &'a Observed,
    /// Work done that the providers may not show yet.
    pub expectations: &'a [Expectation],
    /// The last applied spec, when known: orders destroys of removed groups, and names the
    /// providers a moved group's instances may still be in.
    pub previous: Option<&'a Spec>,
    /// Actions running now.
    pub in_flight: &'a [Action],
    /// Groups whose rollout failed, by name.
    pub paused: &'a BTreeMap<String, Paused>,
}

impl<'a> PlanInput<'a> {
    /// Input with nothing in flight, nothing expected, no history and no paused group.
    pub fn new(spec: &'a Spec, graph: &'a GroupGraph, observed: &'a Observed) -> Self {
        PlanInput {
            spec,
            graph,
            observed,
            expectations: &[],
            previous: None,
            in_flight: &[],
            paused: &NO_PAUSES,
        }
    }
}

/// An observed instance with its provider and the tags the planner reads, looked up once.
#[derive(Clone, Copy)]
struct Seen<'a> {
    provider: &'a str,
    instance: &'a ObservedInstance,
}

impl<'a> Seen<'a> {
    fn hash(&self) -> &'a str {
        &self.instance.tags.hash
    }

    fn state(&self) -> InstanceState {
        self.instance.state
    }
}

/// Plans the changes that make the observed state match the spec.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let PlanInput {
        spec,
        graph,
        observed,
        expectations,
        previous,
        in_flight,
        paused,
    } = input;
    let mut being_destroyed: HashSet<&str> = expectations
        .iter()
        .filter_map(|e| match &e.expected {
            Expected::Destroy { instance } => Some(instance.as_str()),
            Expected::Create { .. } => None,
        })
        .collect();
    being_destroyed.extend(
        in_flight
            .iter()
            .filter(|a| a.action == ActionKind::Destroy)
            .filter_map(|a| a.instance.as_deref()),
    );
    // Live instances an action is removing right now, by (group, slot): until they are
    // gone, their slot gets no new instance (it would hold two).
    let running_destroys: HashSet<&str> = in_flight
        .iter()
        .filter(|a| a.action == ActionKind::Destroy)
        .filter_map(|a| a.instance.as_deref())
        .collect();
    let leaving: HashSet<(&str, &str)> = observed
        .iter()
        .filter(|(_, i)| i.state.is_live() && running_destroys.contains(i.id.as_str()))
        .map(|(_, i)| (i.tags.group.as_str(), i.tags.slot.as_str()))
        .collect();
    let being_created: HashSet<(&str, &Slot)> = expectations
        .iter()
        .filter(|e| matches!(e.expected, Expected::Create { .. }))
        .map(|e| (e.group.as_str(), &e.slot))
        .collect();

    // An observed state holds one project's instances; only a state made for another
    // project needs each instance checked, and then none of them is ours to touch.
    let foreign = observed.project != spec.project;
    let mut by_group: HashMap<&str, Vec<Seen<'_>>> = HashMap::new();
    for (provider, instance) in observed.iter() {
        let not_ours = foreign && instance.tags.project != spec.project;
        if not_ours || being_destroyed.contains(instance.id.as_str()) {
            continue;
        }
        by_group
            .entry(instance.tags.group.as_str())
            .or_default()
            .push(Seen { provider, instance });
    }
    let mut running: HashMap<&str, Vec<&Action>> = HashMap::new();
    for action in in_flight {
        running
            .entry(action.group.as_str())
            .or_default()
            .push(action);
    }

    let groups: HashMap<&str, &Group> = spec.groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let mut builder = Builder::default();
    for name in graph.order() {
        let Some(group) = groups.get(name.as_str()) else {
            continue;
        };
        let seen = by_group.remove(name.as_str()).unwrap_or_default();
        let running = running.remove(name.as_str()).unwrap_or_default();
        if let Some(reason) = unobserved(group, previous, observed) {
            builder
                .held
                .insert(group.name.clone(), Hold::Unobserved { reason });
            continue;
        }
        let context = GroupContext {
            group,
            hash: SpecHash::of(group),
            paused: paused
                .get(&group.name)
                .filter(|p| p.hash == SpecHash::of(group)),
            in_flight: &|slot: &Slot| being_created.contains(&(name.as_str(), slot)),
            leaving: &|slot: &Slot| leaving.contains(&(name.as_str(), slot.to_string().as_str())),
        };
        builder.plan_group(&context, graph, seen, running);
    }

    let mut removed: Vec<(&str, Vec<Seen<'_>>)> = by_group.into_iter().collect();
    removed.sort_by(|a, b| a.0.cmp(b.0));
    for (name, seen) in removed {
        builder.plan_removed_group(name, seen);
    }
    // Destroys of removed groups that are already running stay in the plan, so the
    // destroys of the groups they depend on keep waiting for them.
    let mut leftover: Vec<&Action> = running.into_values().flatten().collect();
    leftover
        .sort_by(|a, b| (&a.group, &a.slot, &a.instance).cmp(&(&b.group, &b.slot, &b.instance)));
    for action in leftover {
        builder.keep_running(action);
    }

    let previous_graph = previous.and_then(|p| GroupGraph::build(p).ok());
    builder.order_destroys(graph, previous_graph.as_ref());
    builder.finish(&spec.project)
}

/// Why a group cannot be planned: a provider it uses, or used in the last applied spec,
/// did not answer, so its instances there are unknown.
fn unobserved(group: &Group, previous: Option<&Spec>, observed: &Observed) -> Option<String> {
    let before = previous
        .and_then(|p| p.group(&group.name))
        .map(|g| g.provider.kind.as_str());
    [Some(group.provider.kind.as_str()), before]
        .into_iter()
        .flatten()
        .find_map(|kind| {
            observed
                .unobserved
                .get(kind)
                .map(|why| format!("the {kind} provider cannot be observed: {why}"))
        })
}

/// What the planner knows of the group being planned.
struct GroupContext<'a> {
    group: &'a Group,
    hash: SpecHash,
    paused: Option<&'a Paused>,
    /// True for slots whose new instance was made but is not visible yet.
    in_flight: &'a dyn Fn(&Slot) -> bool,
    /// True for slots whose live instance is being removed right now.
    leaving: &'a dyn Fn(&Slot) -> bool,
}

#[derive(Default)]
struct Builder {
    actions: Vec<Action>,
    unchanged: usize,
    /// Create, heal and replace actions per group (running ones included).
    builds: HashMap<String, Vec<usize>>,
    /// Destroy actions per group (running ones included).
    destroys: HashMap<String, Vec<usize>>,
    held: BTreeMap<String, Hold>,
    /// The barriers made so far, in the order they were made.
    barriers: Vec<Barrier>,
    /// Each barrier's position in `barriers`, by group, kind and batch.
    barrier_index: HashMap<(String, BarrierKind, Option<u32>), usize>,
}

/// What an action waits for: single actions and barriers.
#[derive(Clone, Default)]
struct Wait {
    after: Vec<usize>,
    barriers: Vec<usize>,
}

impl Wait {
    fn add(&mut self, other: &Wait) {
        self.after.extend(&other.after);
        self.barriers.extend(&other.barriers);
    }

    fn apply(&self, action: &mut Action) {
        action.after.extend(&self.after);
        action.after_barriers.extend(&self.barriers);
    }
}

/// Orders live instances of one slot: the one to keep first. One that serves comes before
/// one that does not (yet), whatever its version; among equals, the current version, then
/// the oldest.
fn keep_rank<'a>(
    seen: &Seen<'a>,
    current: &SpecHash,
    paused: Option<&Paused>,
) -> (u8, bool, u64, &'a str) {
    // A paused group keeps what is not of the failed version: its new instance beside an
    // old one that serves is the duplicate, not the old one.
    let off_version = match paused {
        Some(paused) => seen.hash() == paused.hash.as_str(),
        None => seen.hash() != current.as_str(),
    };
    let state_rank = match seen.state() {
        InstanceState::Running => 0,
        InstanceState::Starting => 1,
        InstanceState::Unhealthy => 2,
        InstanceState::Dead => 3,
    };
    (
        state_rank,
        off_version,
        seen.instance.started_at,
        seen.instance.id.as_str(),
    )
}

/// How many unhealthy instances of a group may be replaced at once.
fn health_budget(group: &Group) -> usize {
    match &group.update {
        UpdatePolicy::Rolling(r) => r.max_unavailable.max(1) as usize,
        UpdatePolicy::Recreate => 1,
    }
}

/// The tally of one group's slots while it is planned.
#[derive(Default)]
struct Tally {
    /// Slots without a serving instance: missing, dead, starting, unhealthy, being made.
    unavailable: usize,
    /// Why, for the first few, to explain a wait.
    why_unavailable: Vec<String>,
    /// Actions (planned or running) that bring an unavailable slot back.
    restoring: Vec<usize>,
    /// Running replaces (the batch in progress).
    replacing: Vec<usize>,
    /// The highest batch number among running replaces.
    batch_running: u32,
    /// Running replacements of unhealthy instances.
    healing_unhealthy: Vec<usize>,
    /// Slots already served at the group's hash: the batches done so far.
    at_hash: usize,
    /// Slots holding a second, new instance not judged yet: surge room in use.
    surging: usize,
}

impl Tally {
    fn down(&mut self, why: String) {
        self.unavailable += 1;
        if self.why_unavailable.len() < 3 {
            self.why_unavailable.push(why);
        }
    }
}

impl Builder {
    fn push(&mut self, action: Action) -> usize {
        let index = self.actions.len();
        let list = match action.action {
            ActionKind::Destroy => self.destroys.entry(action.group.clone()).or_default(),
            _ => self.builds.entry(action.group.clone()).or_default(),
        };
        list.push(index);
        self.actions.push(action);
        index
    }

    fn keep_running(&mut self, action: &Action) -> usize {
        let mut running = action.clone();
        running.after.clear();
        running.after_barriers.clear();
        running.waits = None;
        running.in_flight = true;
        self.push(running)
    }

    fn action(kind: ActionKind, group: &str, slot: Slot, provider: &str, reason: String) -> Action {
        Action {
            action: kind,
            group: group.to_owned(),
            slot,
            reason,
            after: Vec::new(),
            after_barriers: Vec::new(),
            provider: provider.to_owned(),
            instance: None,
            hash: None,
            from_hash: None,
            batch: None,
            surge: false,
            instance_provider: None,
            unhealthy: false,
            waits: None,
            in_flight: false,
        }
    }

    /// The barrier of `group`'s `kind` actions (of `batch`), made from `members` the first
    /// time it is asked for; none when there are no members.
    fn barrier(
        &mut self,
        group: &str,
        kind: BarrierKind,
        batch: Option<u32>,
        members: &[usize],
    ) -> Option<usize> {
        if members.is_empty() {
            return None;
        }
        let key = (group.to_owned(), kind, batch);
        if let Some(index) = self.barrier_index.get(&key) {
            return Some(*index);
        }
        let index = self.barriers.len();
        self.barriers.push(Barrier {
            group: group.to_owned(),
            kind,
            batch,
            actions: members.to_vec(),
        });
        self.barrier_index.insert(key, index);
        Some(index)
    }

    /// A wait on `members`, actions of `group` itself: a direct edge for one action, a
    /// barrier for several.
    fn wait_within(
        &mut self,
        group: &str,
        kind: BarrierKind,
        batch: Option<u32>,
        members: &[usize],
    ) -> Wait {
        match members {
            [one] => Wait {
                after: vec![*one],
                barriers: Vec::new(),
            },
            _ => Wait {
                after: Vec::new(),
                barriers: self
                    .barrier(group, kind, batch, members)
                    .into_iter()
                    .collect(),
            },
        }
    }

    fn destroy(&mut self, group: &str, slot: Slot, seen: &Seen<'_>, reason: String) {
        let mut action = Self::action(ActionKind::Destroy, group, slot, seen.provider, reason);
        action.instance = Some(seen.instance.id.clone());
        self.push(action);
    }

    /// An action that makes a new instance of `group` in place of `seen` (or in an empty
    /// slot), by the group's provider; the old instance goes through its own provider.
    fn build(
        kind: ActionKind,
        group: &Group,
        slot: &Slot,
        seen: Option<&Seen<'_>>,
        hash: SpecHash,
        reason: String,
    ) -> Action {
        let provider = group.provider.kind.as_str();
        let mut action = Self::action(kind, &group.name, slot.clone(), provider, reason);
        if let Some(old) = seen {
            action.instance = Some(old.instance.id.clone());
            action.from_hash = Some(SpecHash::from_tag(old.hash()));
            if old.provider != provider {
                action.instance_provider = Some(old.provider.to_owned());
            }
        }
        action.hash = Some(hash);
        action
    }

    fn plan_group(
        &mut self,
        ctx: &GroupContext<'_>,
        graph: &GroupGraph,
        seen: Vec<Seen<'_>>,
        running: Vec<&Action>,
    ) {
        let group = ctx.group;
        let hash = &ctx.hash;
        // One sort puts each slot's instances together: live ones best first (the one to
        // keep), then dead ones newest first. No allocation per slot.
        let mut seen: Vec<(Slot, Seen<'_>)> = seen
            .into_iter()
            .map(|s| (group.allocation.parse_slot(&s.instance.tags.slot), s))
            .collect();
        seen.sort_by(|(slot_a, a), (slot_b, b)| {
            slot_a
                .cmp(slot_b)
                .then_with(|| a.state().is_live().cmp(&b.state().is_live()).reverse())
                .then_with(|| {
                    if a.state().is_live() {
                        keep_rank(a, hash, ctx.paused).cmp(&keep_rank(b, hash, ctx.paused))
                    } else {
                        (b.instance.started_at, &b.instance.id)
                            .cmp(&(a.instance.started_at, &a.instance.id))
                    }
                })
        });
        let mut claimed = vec![false; seen.len()];
        let mut cursor = 0;

        // What its builds wait for: every build of every group it depends on, one barrier
        // per group.
        let mut dependency_builds = Wait::default();
        for dependency in graph.dependencies(&group.name) {
            let members = self.builds.get(dependency).cloned().unwrap_or_default();
            dependency_builds.barriers.extend(self.barrier(
                dependency,
                BarrierKind::Builds,
                None,
                &members,
            ));
        }
        let mut tally = Tally::default();
        // Running actions of this group, by slot; running destroys are kept as they are.
        let mut busy: BTreeMap<&Slot, &Action> = BTreeMap::new();
        for action in running {
            if action.action == ActionKind::Destroy {
                // An extra instance of an allocated slot lives until its destroy is done:
                // it takes surge room meanwhile.
                if group.allocation.contains(&action.slot) {
                    tally.surging += 1;
                }
                self.keep_running(action);
            } else {
                busy.insert(&action.slot, action);
            }
        }
        let mut outdated: Vec<(Slot, Seen<'_>)> = Vec::new();
        let mut sick: Vec<(Slot, Seen<'_>)> = Vec::new();

        // Allocated slots in order, merged with the sorted instances.
        let mut slots = group.slots();
        slots.sort();
        for slot in slots {
            while cursor < seen.len() && seen[cursor].0 < slot {
                cursor += 1;
            }
            let from = cursor;
            while cursor < seen.len() && seen[cursor].0 == slot {
                claimed[cursor] = true;
                cursor += 1;
            }
            let instances = &seen[from..cursor];
            if let Some(action) = busy.remove(&slot) {
                let index = self.keep_running(action);
                if action.takes_slot_down() {
                    tally.down(format!(
                        "{}/{slot} is being {}d",
                        group.name,
                        action.action.name()
                    ));
                    tally.restoring.push(index);
                }
                if action.action == ActionKind::Replace {
                    tally.replacing.push(index);
                    tally.batch_running = tally.batch_running.max(action.batch.unwrap_or(1));
                }
                if action.unhealthy {
                    tally.healing_unhealthy.push(index);
                }
                continue;
            }
            if (ctx.in_flight)(&slot) {
                self.unchanged += instances.len();
                continue;
            }
            let live_count = instances
                .iter()
                .take_while(|(_, s)| s.state().is_live())
                .count();
            let (live, dead) = instances.split_at(live_count);
            if live.is_empty() && (ctx.leaving)(&slot) {
                // Its instance is being removed (a scale down undone, say): wait for it.
                tally.down(format!("{}/{slot} is being emptied", group.name));
                continue;
            }
            let Some((_, keep)) = live.first() else {
                let action = match dead.first() {
                    Some((_, last)) => Self::build(
                        ActionKind::Heal,
                        group,
                        &slot,
                        Some(last),
                        heal_hash(ctx, last),
                        match &last.instance.ended {
                            // Why it ended, when its provider knows: "tainted", "orphaned".
                            Some(why) => format!("instance is dead ({why})"),
                            None => "instance is dead".to_owned(),
                        },
                    ),
                    None => Self::build(
                        ActionKind::Create,
                        group,
                        &slot,
                        None,
                        create_hash(ctx, &seen),
                        "no instance in slot".to_owned(),
                    ),
                };
                let mut action = action;
                dependency_builds.apply(&mut action);
                let index = self.push(action);
                tally.down(format!("{}/{slot} has no live instance", group.name));
                tally.restoring.push(index);
                for (_, extra) in dead.iter().skip(1) {
                    let reason = "dead instance left in slot".to_owned();
                    self.destroy(&group.name, slot.clone(), extra, reason);
                }
                continue;
            };
            let keep_serves = keep.state() == InstanceState::Running;
            for (_, duplicate) in &live[1..] {
                // Nothing that may serve is removed before the slot's instances are judged:
                // a new instance of the current version beside an old one is a surge in
                // progress (its controller may have died), and it takes surge room.
                let judged_failing = duplicate.state() == InstanceState::Unhealthy;
                let surge_in_progress = duplicate.hash() == hash.as_str()
                    && duplicate.state() == InstanceState::Starting
                    && keep.hash() != hash.as_str();
                if !judged_failing && (!keep_serves || surge_in_progress) {
                    tally.surging += 1;
                    self.unchanged += 1;
                    continue;
                }
                let reason = format!("duplicate in slot; keeping {}", keep.instance.id);
                self.destroy(&group.name, slot.clone(), duplicate, reason);
                tally.surging += 1;
            }
            for (_, gone) in dead {
                let reason = format!("dead instance; slot is served by {}", keep.instance.id);
                self.destroy(&group.name, slot.clone(), gone, reason);
            }
            if keep.hash() == hash.as_str() {
                tally.at_hash += 1;
            }
            match keep.state() {
                InstanceState::Unhealthy => {
                    tally.down(format!("{}/{slot} fails its health check", group.name));
                    sick.push((slot.clone(), *keep));
                }
                // `recreate` replaces every outdated instance at once, judged or not.
                InstanceState::Starting
                    if keep.hash() != hash.as_str()
                        && matches!(group.update, UpdatePolicy::Recreate) =>
                {
                    tally.down(format!(
                        "{}/{slot} has not passed its health check yet",
                        group.name
                    ));
                    outdated.push((slot.clone(), *keep));
                }
                InstanceState::Starting => {
                    tally.down(format!(
                        "{}/{slot} has not passed its health check yet",
                        group.name
                    ));
                    self.unchanged += 1;
                }
                InstanceState::Running | InstanceState::Dead => {
                    if keep.hash() != hash.as_str() {
                        outdated.push((slot.clone(), *keep));
                    } else {
                        self.unchanged += 1;
                    }
                }
            }
        }

        self.plan_health_replacements(ctx, sick, &dependency_builds, &mut tally);
        match ctx.paused {
            Some(paused) => {
                self.unchanged += outdated.len();
                self.held.insert(
                    group.name.clone(),
                    Hold::Paused {
                        reason: paused.reason.clone(),
                    },
                );
            }
            None => self.plan_replaces(ctx, outdated, &dependency_builds, &tally),
        }

        // Instances in slots the allocation no longer has: highest slot first.
        let mut extra: Vec<&(Slot, Seen<'_>)> = seen
            .iter()
            .zip(&claimed)
            .filter(|(_, claimed)| !**claimed)
            .map(|(entry, _)| entry)
            .collect();
        extra.sort_by(|(slot_a, a), (slot_b, b)| {
            slot_b
                .cmp(slot_a)
                .then_with(|| a.instance.id.cmp(&b.instance.id))
        });
        for (slot, s) in extra {
            let reason = match (&group.allocation, slot) {
                (Allocation::Size(n), Slot::Index(_)) => {
                    format!("scale down: slot {slot} is beyond size {n}")
                }
                (Allocation::Ids(_), _) => {
                    format!("id {:?} is no longer in ids", slot.to_string())
                }
                (Allocation::Size(_), Slot::Id(text)) => {
                    format!("slot {text:?} is not a slot of a sized group")
                }
            };
            self.destroy(&group.name, slot.clone(), s, reason);
        }
        // Running actions of slots the allocation no longer has finish as they are.
        for action in busy.into_values() {
            self.keep_running(action);
        }
    }

    /// Replaces instances past their failure threshold, within the group's budget, and
    /// none while more than half of the group is unhealthy at once.
    fn plan_health_replacements(
        &mut self,
        ctx: &GroupContext<'_>,
        sick: Vec<(Slot, Seen<'_>)>,
        dependency_builds: &Wait,
        tally: &mut Tally,
    ) {
        let group = ctx.group;
        // A paused group leaves the instances of the failed version alone: replacing them
        // with the same version would fail the same way.
        let sick: Vec<(Slot, Seen<'_>)> = match ctx.paused {
            Some(paused) => sick
                .into_iter()
                .filter(|(_, s)| s.hash() != paused.hash.as_str())
                .collect(),
            None => sick,
        };
        let size = group.allocation.len();
        let unhealthy = sick.len() + tally.healing_unhealthy.len();
        // Instances of an older version are replaced by the rollout whatever their health:
        // a new spec is the operator's answer. Only those at the wanted version wait while
        // more than half of the group fails (a shared dependency is the likely cause).
        let sick: Vec<(Slot, Seen<'_>)> = if unhealthy >= 2 && unhealthy * 2 > size {
            let (outdated, current): (Vec<_>, Vec<_>) = sick
                .into_iter()
                .partition(|(_, s)| s.hash() != ctx.hash.as_str() && ctx.paused.is_none());
            self.unchanged += current.len();
            if !current.is_empty() {
                self.held.insert(
                    group.name.clone(),
                    Hold::Degraded {
                        reason: format!(
                            "{unhealthy} of {size} instances fail their health checks at once; \
                             none is replaced until the checks recover"
                        ),
                    },
                );
            }
            outdated
        } else {
            sick
        };
        let budget = health_budget(group);
        let mut first_wave: Vec<usize> = tally.healing_unhealthy.clone();
        let mut waiting_on = tally.healing_unhealthy.clone();
        // What the ones beyond the budget wait for: the first wave, once it is complete.
        let mut beyond_budget: Option<Wait> = None;
        for (slot, keep) in sick {
            let hash = match ctx.paused {
                Some(_) => heal_hash(ctx, &keep),
                None => ctx.hash.clone(),
            };
            let reason = if keep.hash() == ctx.hash.as_str() || ctx.paused.is_some() {
                "instance is unhealthy past its failure threshold".to_owned()
            } else {
                "instance is unhealthy past its failure threshold (and outdated)".to_owned()
            };
            let mut action = Self::build(ActionKind::Heal, group, &slot, Some(&keep), hash, reason);
            action.unhealthy = true;
            dependency_builds.apply(&mut action);
            if first_wave.len() >= budget {
                // Beyond the budget: wait for the ones before it.
                let wait = match &beyond_budget {
                    Some(wait) => wait.clone(),
                    None => {
                        let wait = self.wait_within(
                            &group.name,
                            BarrierKind::UnhealthyHeals,
                            None,
                            &waiting_on,
                        );
                        beyond_budget = Some(wait.clone());
                        wait
                    }
                };
                wait.apply(&mut action);
            }
            let index = self.push(action);
            tally.restoring.push(index);
            if first_wave.len() < budget {
                first_wave.push(index);
                waiting_on.push(index);
            }
        }
    }

    /// Replaces outdated instances that serve: in batches of `max_unavailable` in place
    /// plus `max_surge` created first; `ids` groups one slot at a time; `recreate` all at
    /// once. The first batch fits what the group can lose now.
    fn plan_replaces(
        &mut self,
        ctx: &GroupContext<'_>,
        outdated: Vec<(Slot, Seen<'_>)>,
        dependency_builds: &Wait,
        tally: &Tally,
    ) {
        if outdated.is_empty() {
            return;
        }
        let group = ctx.group;
        let batch_size = rolling_batch(group).unwrap_or(outdated.len());
        let (max_unavailable, surge_room) = match (&group.update, &group.allocation) {
            (UpdatePolicy::Recreate, _) => (outdated.len(), 0),
            (UpdatePolicy::Rolling(r), Allocation::Ids(_)) => {
                (r.max_unavailable.max(1) as usize, 0)
            }
            (UpdatePolicy::Rolling(r), Allocation::Size(_)) => {
                (r.max_unavailable as usize, r.max_surge as usize)
            }
        };
        // Surge in progress (a new instance beside an old one, not judged yet) takes room.
        let max_surge = surge_room.saturating_sub(tally.surging);
        // What may start now: surge always (it takes nothing down); in place only as far
        // as the group's unavailable slots leave room. Nothing starts while a batch runs.
        let recreate = matches!(group.update, UpdatePolicy::Recreate);
        let first_size = if !tally.replacing.is_empty() || recreate {
            batch_size
        } else {
            let in_place = max_unavailable.saturating_sub(tally.unavailable);
            let in_place = match group.allocation {
                Allocation::Ids(_) => in_place.min(1),
                Allocation::Size(_) => in_place,
            };
            match max_surge + in_place {
                0 => batch_size,
                n => n.min(batch_size),
            }
        };
        let blocked = !recreate
            && tally.replacing.is_empty()
            && max_surge == 0
            && max_unavailable.saturating_sub(tally.unavailable) == 0;
        let mut chunks: Vec<&[(Slot, Seen<'_>)]> = Vec::new();
        let (head, rest) = outdated.split_at(first_size.min(outdated.len()));
        chunks.push(head);
        chunks.extend(rest.chunks(batch_size));
        // Batches are numbered over the whole rollout: what is done already counts.
        let first_batch = if tally.replacing.is_empty() {
            (tally.at_hash / batch_size) as u32 + 1
        } else {
            tally.batch_running + 1
        };
        let last_batch = first_batch - 1 + chunks.len() as u32;
        // The first batch waits for the groups it depends on and, when there is no room
        // for it, for the slots being brought back; each next one for the one before it
        // (or, while a batch runs, for that batch).
        let mut first_wait = dependency_builds.clone();
        if blocked {
            let restoring =
                self.wait_within(&group.name, BarrierKind::Restoring, None, &tally.restoring);
            first_wait.add(&restoring);
        }
        let mut previous_batch: Vec<usize> = tally.replacing.clone();
        for (number, chunk) in chunks.into_iter().enumerate() {
            let batch = first_batch + number as u32;
            let wait = if number == 0 && tally.replacing.is_empty() {
                first_wait.clone()
            } else {
                self.wait_within(
                    &group.name,
                    BarrierKind::Batch,
                    Some(batch - 1),
                    &previous_batch,
                )
            };
            let mut this_batch = Vec::new();
            for (position, (slot, seen)) in chunk.iter().enumerate() {
                let policy = match group.update {
                    UpdatePolicy::Recreate => "recreate".to_owned(),
                    UpdatePolicy::Rolling(_) => format!("rolling batch {batch} of {last_batch}"),
                };
                let reason = format!(
                    "outdated: hash {} -> {} ({policy})",
                    display_hash(seen.hash()),
                    ctx.hash
                );
                let mut action = Self::build(
                    ActionKind::Replace,
                    group,
                    slot,
                    Some(seen),
                    ctx.hash.clone(),
                    reason,
                );
                action.batch = Some(batch);
                action.surge = position < if number == 0 { max_surge } else { surge_room };
                wait.apply(&mut action);
                if number == 0 && blocked && tally.restoring.is_empty() {
                    action.waits = Some(format!(
                        "{} of {} instances are unavailable and max_unavailable is {max_unavailable} ({})",
                        tally.unavailable,
                        group.allocation.len(),
                        tally.why_unavailable.join("; ")
                    ));
                }
                this_batch.push(self.push(action));
            }
            previous_batch = this_batch;
        }
    }

    fn plan_removed_group(&mut self, name: &str, seen: Vec<Seen<'_>>) {
        let reason = if name.is_empty() {
            "instance has no tend.group tag".to_owned()
        } else {
            format!("group {name:?} is no longer in the spec")
        };
        let mut seen = seen;
        let slot = |s: &Seen<'_>| Allocation::Size(0).parse_slot(&s.instance.tags.slot);
        seen.sort_by(|a, b| (slot(b), &b.instance.id).cmp(&(slot(a), &a.instance.id)));
        for s in &seen {
            self.destroy(name, slot(s), s, reason.clone());
        }
    }

    /// Destroys run dependents first: a group's destroys wait for the destroys of every
    /// group that depends on it (in the spec, or in the previous spec for removed groups).
    fn order_destroys(&mut self, graph: &GroupGraph, previous: Option<&GroupGraph>) {
        let current: HashSet<&str> = graph.order().iter().map(String::as_str).collect();
        let groups: Vec<String> = self.destroys.keys().cloned().collect();
        for group in groups {
            let mut dependents: Vec<&str> = graph.dependents(&group);
            if !current.contains(group.as_str()) {
                if let Some(prev) = previous {
                    dependents = prev.dependents(&group);
                }
            }
            let mut waits: Vec<usize> = Vec::new();
            for dependent in dependents {
                let members = self.destroys.get(dependent).cloned().unwrap_or_default();
                waits.extend(self.barrier(dependent, BarrierKind::Destroys, None, &members));
            }
            for index in self.destroys[&group].clone() {
                if !self.actions[index].in_flight {
                    self.actions[index].after_barriers.extend(&waits);
                }
            }
        }
    }

    /// Sorts the barriers by group, kind and batch (they were made in an order that
    /// depends on hashing), renumbers what refers to them, and sorts every list.
    fn finish(mut self, project: &str) -> Plan {
        let mut made: Vec<(usize, Barrier)> = self.barriers.into_iter().enumerate().collect();
        made.sort_by(|(_, a), (_, b)| {
            (&a.group, a.kind, a.batch).cmp(&(&b.group, b.kind, b.batch))
        });
        let mut position = vec![0; made.len()];
        let mut barriers = Vec::with_capacity(made.len());
        for (new, (old, mut barrier)) in made.into_iter().enumerate() {
            position[old] = new;
            barrier.actions.sort_unstable();
            barrier.actions.dedup();
            barriers.push(barrier);
        }
        for action in &mut self.actions {
            action.after.sort_unstable();
            action.after.dedup();
            for b in &mut action.after_barriers {
                *b = position[*b];
            }
            action.after_barriers.sort_unstable();
            action.after_barriers.dedup();
        }
        Plan {
            project: project.to_owned(),
            summary: Plan::count(&self.actions),
            unchanged: self.unchanged,
            actions: self.actions,
            barriers,
            held: self.held,
        }
    }
}

/// The hash a dead instance comes back at: in a paused group (which makes no progress),
/// the hash it had when its template is known and it is not a version that serves nowhere
/// while another one serves stably (healing at a version that never turned healthy would
/// never heal), else the version most of the group serves stably with, else the version
/// before the failed one. The group's hash otherwise.
fn heal_hash(ctx: &GroupContext<'_>, dead: &Seen<'_>) -> SpecHash {
    let own = SpecHash::from_tag(dead.hash());
    let Some(paused) = ctx.paused else {
        return ctx.hash.clone();
    };
    let serves_elsewhere = !paused.serving.is_empty() && !paused.serving.contains(&own);
    if paused.known.contains(&own) && !serves_elsewhere {
        return own;
    }
    paused
        .serving
        .first()
        .or(paused.fallback.as_ref())
        .cloned()
        .unwrap_or_else(|| ctx.hash.clone())
}

/// The hash an empty slot is filled at: in a paused group, the version most of the group
/// serves stably with; without any, the hash most of its live instances have (other than
/// the failed one) when its template is known, else the version before the failed one. The
/// group's hash otherwise.
fn create_hash(ctx: &GroupContext<'_>, seen: &[(Slot, Seen<'_>)]) -> SpecHash {
    let Some(paused) = ctx.paused else {
        return ctx.hash.clone();
    };
    if let Some(best) = paused.serving.first() {
        return best.clone();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in seen.iter().filter(|(_, s)| s.state().is_live()) {
        *counts.entry(s.hash()).or_default() += 1;
    }
    // Never the version whose rollout failed: filling a slot with it would be progress.
    counts
        .into_iter()
        .filter(|(h, _)| *h != paused.hash.as_str() && *h != paused.failed.as_str())
        .filter(|(h, _)| paused.known.contains(&SpecHash::from_tag(h)))
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(h, _)| SpecHash::from_tag(h))
        .or_else(|| paused.fallback.clone())
        .unwrap_or_else(|| ctx.hash.clone())
}

fn display_hash(hash: &str) -> &str {
    if hash.is_empty() {
        "(none)"
    } else {
        hash
    }
}

/// How many instances one batch of `group`'s rolling update replaces (one at a time for
/// groups of named ids); `None` for a recreate, which replaces every outdated one at once.
pub fn rolling_batch(group: &crate::spec::Group) -> Option<usize> {
    match (&group.update, &group.allocation) {
        (UpdatePolicy::Recreate, _) => None,
        (UpdatePolicy::Rolling(_), Allocation::Ids(_)) => Some(1),
        (UpdatePolicy::Rolling(r), Allocation::Size(_)) => {
            Some((r.max_unavailable as usize + r.max_surge as usize).max(1))
        }
    }
}

#[cfg(test)]
mod tests;

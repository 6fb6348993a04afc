//! Planner invariants over random worlds, applied step by step to the real sim provider:
//! nothing the spec still wants is destroyed; the startable actions of a plan never take
//! more of a group down than its budget allows; applying what may start, again and again,
//! converges to one live, current instance per slot; no slot ever holds two live instances
//! except a surge pair; what each action waits for (its `after` and its barriers) is what
//! the dependency and batch rules say.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use engine::clock::Clock;
use engine::graph::GroupGraph;
use engine::lang::{evaluate_source, EvalOptions};
use engine::plan::{plan, ActionKind, Plan, PlanInput};
use engine::provider::{
    observe, InstanceState, InstanceTags, Observed, ObservedInstance, Provider, ProviderSet,
    ProvisionRequest,
};
use engine::spec::{Allocation, Spec, UpdatePolicy};
use proptest::prelude::*;
use providers::sim::{Calm, SimProvider, SimWorld};

/// A random world: allocations of three groups and what is observed.
#[derive(Clone, Debug)]
struct World {
    a_size: u32,
    b_ids: Vec<&'static str>,
    c_size: u32,
    observed: Vec<(usize, usize, bool, InstanceState)>,
}

const GROUPS: [&str; 4] = ["a", "b", "c", "gone"];
const SLOTS: [&str; 9] = ["0", "1", "2", "3", "4", "x", "y", "z", "w"];

fn world() -> impl Strategy<Value = World> {
    let state = prop_oneof![
        Just(InstanceState::Running),
        Just(InstanceState::Starting),
        Just(InstanceState::Unhealthy),
        Just(InstanceState::Dead),
    ];
    (
        0u32..6,
        proptest::sample::subsequence(vec!["x", "y", "z"], 0..=3),
        0u32..4,
        proptest::collection::vec(
            (0..GROUPS.len(), 0..SLOTS.len(), any::<bool>(), state),
            0..16,
        ),
    )
        .prop_map(|(a_size, b_ids, c_size, observed)| World {
            a_size,
            b_ids,
            c_size,
            observed,
        })
}

fn spec_text(w: &World) -> String {
    let ids: Vec<String> = w.b_ids.iter().map(|i| format!("{i:?}")).collect();
    format!(
        r#"project(name = "props")
a = group(name = "a", size = {}, provider = sim(), flavor = flavor(command = ["a"]), update = rolling(max_unavailable = 1, max_surge = 1))
group(name = "b", ids = [{}], provider = sim(), flavor = flavor(command = ["b"]))
group(name = "c", size = {}, provider = sim(), flavor = flavor(command = ["c", "{{{{ groups.a.addresses | length }}}}"]), depends_on = [a], update = recreate())
"#,
        w.a_size,
        ids.join(", "),
        w.c_size
    )
}

fn hash_of(spec: &Spec, group: &str) -> String {
    spec.group(group)
        .map(|g| engine::spec::SpecHash::of(g).to_string())
        .unwrap_or_else(|| "0ld0ld0ld0ld".to_owned())
}

fn request(spec: &Spec, group: &str, slot: &str, hash: &str) -> ProvisionRequest {
    ProvisionRequest::bare(
        engine::spec::Slot::Id(slot.to_owned()),
        InstanceTags {
            project: spec.project.clone(),
            group: group.to_owned(),
            slot: slot.to_owned(),
            hash: hash.to_owned(),
            ports: Default::default(),
            format: engine::format::INSTANCE,
        },
    )
}

/// Applies the startable actions of a plan through the Provider trait, as if each new
/// instance turned healthy at once.
async fn apply_startable(sim: &SimProvider, spec: &Spec, planned: &Plan) -> Result<(), String> {
    for action in planned.startable() {
        if action.action != ActionKind::Create
            && action.action != ActionKind::Destroy
            && action.instance.is_none()
        {
            return Err(format!("{action:?} without an instance"));
        }
        if let Some(old) = &action.instance {
            sim.destroy(old).await.map_err(|e| e.to_string())?;
        }
        if action.action != ActionKind::Destroy {
            let hash = action
                .hash
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            sim.provision(request(
                spec,
                &action.group,
                &action.slot.to_string(),
                &hash,
            ))
            .await
            .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn live_per_slot(observed: &Observed) -> BTreeMap<(String, String), Vec<&ObservedInstance>> {
    let mut slots: BTreeMap<(String, String), Vec<&ObservedInstance>> = BTreeMap::new();
    for (_, i) in observed.iter() {
        if i.state.is_live() {
            let key = (i.tags.group.clone(), i.tags.slot.clone());
            slots.entry(key).or_default().push(i);
        }
    }
    slots
}

/// Checks one plan: nothing wanted destroyed; startable disruptions within budget.
fn check_plan(spec: &Spec, before: &Observed, planned: &Plan) -> Result<(), TestCaseError> {
    let destroyed: HashSet<&str> = planned
        .actions
        .iter()
        .filter(|a| a.action == ActionKind::Destroy)
        .filter_map(|a| a.instance.as_deref())
        .collect();
    let before_live = live_per_slot(before);
    for action in planned
        .actions
        .iter()
        .filter(|a| a.action == ActionKind::Destroy)
    {
        let Some(group) = spec.group(&action.group) else {
            continue;
        };
        if !group.allocation.contains(&action.slot) {
            continue;
        }
        let id = action.instance.as_deref().unwrap_or("");
        let was_dead = before.iter().any(|(_, i)| i.id == id && !i.state.is_live());
        let survivor = before_live
            .get(&(action.group.clone(), action.slot.to_string()))
            .is_some_and(|l| l.iter().any(|i| !destroyed.contains(i.id.as_str())));
        prop_assert!(
            was_dead || survivor,
            "destroyed wanted instance {id} in {}/{}",
            action.group,
            action.slot
        );
    }
    for group in &spec.groups {
        let (max_unavailable, max_surge) = match (&group.update, &group.allocation) {
            (UpdatePolicy::Recreate, _) => continue,
            (UpdatePolicy::Rolling(r), Allocation::Ids(_)) => {
                (r.max_unavailable.max(1) as usize, 0)
            }
            (UpdatePolicy::Rolling(r), _) => (r.max_unavailable as usize, r.max_surge as usize),
        };
        let state_of = |slot: &str| {
            before_live
                .get(&(group.name.clone(), slot.to_owned()))
                .and_then(|l| l.iter().map(|i| i.state).min())
        };
        let unavailable = group
            .slots()
            .iter()
            .filter(|s| state_of(&s.to_string()) != Some(InstanceState::Running))
            .count();
        let startable: Vec<_> = planned
            .startable()
            .filter(|a| a.group == group.name)
            .collect();
        let disrupting = startable
            .iter()
            .filter(|a| {
                a.action == ActionKind::Replace
                    && !a.surge
                    && state_of(&a.slot.to_string()) == Some(InstanceState::Running)
            })
            .count();
        prop_assert!(
            disrupting == 0 || unavailable + disrupting <= max_unavailable,
            "group {}: {disrupting} serving instances replaced in place with {unavailable} unavailable (max {max_unavailable})\n{}",
            group.name,
            planned.to_text()
        );
        let surging = startable.iter().filter(|a| a.surge).count();
        prop_assert!(
            surging <= max_surge,
            "group {}: {surging} surges",
            group.name
        );
        let sick = startable.iter().filter(|a| a.unhealthy).count();
        prop_assert!(
            sick <= max_unavailable.max(1),
            "group {}: {sick} unhealthy instances replaced at once",
            group.name
        );
        // Degraded: no instance of the wanted version is replaced for failing its checks
        // (older ones still go: a new spec is the operator's answer).
        if planned.held.get(&group.name).map(|h| h.name()) == Some("degraded") {
            let current = engine::spec::SpecHash::of(group);
            let at_current = startable
                .iter()
                .filter(|a| a.unhealthy && a.from_hash.as_ref() == Some(&current))
                .count();
            prop_assert_eq!(at_current, 0);
        }
    }
    Ok(())
}

/// Checks what each action waits for, flattened from `after` and the barriers, against the
/// planner's rules (as the per-action lists of older plans gave it): every create and heal
/// of a group waits for every create, heal and replace of each group it depends on, and
/// for nothing else of another group; a replace does too, or (in a later rolling batch)
/// waits for the whole batch before it; every destroy waits for every destroy of each group
/// that depends on its group. And the barriers are well formed: none empty, every index in
/// the plan, sorted, one per group, kind and batch.
fn check_waits(graph: &GroupGraph, planned: &Plan) -> Result<(), TestCaseError> {
    let n = planned.actions.len();
    let of = |group: &str, destroys: bool| -> BTreeSet<usize> {
        (0..n)
            .filter(|i| {
                let a = &planned.actions[*i];
                a.group == group && (a.action == ActionKind::Destroy) == destroys
            })
            .collect()
    };
    for (i, action) in planned.actions.iter().enumerate() {
        let waits: BTreeSet<usize> = planned.waits_for(i).into_iter().collect();
        prop_assert!(
            waits.iter().all(|w| *w < n && *w != i),
            "action {i}: {waits:?}"
        );
        if action.in_flight {
            prop_assert!(waits.is_empty(), "running action {i} waits for {waits:?}");
            continue;
        }
        let other_groups: BTreeSet<usize> = waits
            .iter()
            .copied()
            .filter(|w| planned.actions[*w].group != action.group)
            .collect();
        let text = planned.to_text();
        if action.action == ActionKind::Destroy {
            let expected: BTreeSet<usize> = graph
                .dependents(&action.group)
                .iter()
                .flat_map(|d| of(d, true))
                .collect();
            prop_assert_eq!(
                &other_groups,
                &expected,
                "destroy {}:
{}",
                i,
                text
            );
            continue;
        }
        let expected: BTreeSet<usize> = graph
            .dependencies(&action.group)
            .iter()
            .flat_map(|d| of(d, false))
            .collect();
        let previous_batch: BTreeSet<usize> = (0..n)
            .filter(|j| {
                let b = &planned.actions[*j];
                b.group == action.group
                    && b.action == ActionKind::Replace
                    && b.batch.is_some()
                    && b.batch.map(|x| x + 1) == action.batch
            })
            .collect();
        let later_batch = action.action == ActionKind::Replace
            && other_groups.is_empty()
            && !previous_batch.is_empty()
            && waits == previous_batch;
        prop_assert!(
            other_groups == expected || later_batch,
            "{} {}: waits for {:?} of other groups, not {:?}:\n{}",
            action.action.name(),
            i,
            other_groups,
            expected,
            text
        );
    }
    let mut keys = Vec::new();
    for barrier in &planned.barriers {
        prop_assert!(!barrier.actions.is_empty(), "empty barrier {barrier:?}");
        prop_assert!(barrier.actions.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(barrier.actions.iter().all(|a| *a < n));
        keys.push((barrier.group.clone(), barrier.kind, barrier.batch));
    }
    prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "barriers: {keys:?}");
    Ok(())
}

fn check_world(w: &World) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let spec = evaluate_source(
        "main.star",
        &spec_text(w),
        dir.path(),
        &EvalOptions::default(),
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let graph = GroupGraph::build(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let world = SimWorld::in_memory(Clock::real(), Arc::new(Calm), None);
    let sim = SimProvider::with_world(world);
    let mut set = ProviderSet::default();
    set.insert(Arc::new(sim.clone()));
    runtime.block_on(async {
        for (started_at, (g, s, current, state)) in w.observed.iter().enumerate() {
            let group = GROUPS[*g];
            let hash = if *current {
                hash_of(&spec, group)
            } else {
                "0ld0ld0ld0ld".to_owned()
            };
            let t = InstanceTags {
                project: "props".to_owned(),
                group: group.to_owned(),
                slot: SLOTS[*s].to_owned(),
                hash,
                ports: Default::default(),
                format: engine::format::INSTANCE,
            };
            sim.insert(ObservedInstance {
                id: String::new(),
                tags: t,
                labels: BTreeMap::new(),
                address: None,
                state: *state,
                started_at: started_at as u64 + 1,
                ended: None,
                remains: 0,
                ports: Default::default(),
            })
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut last = String::new();
        for step in 0..12 {
            let before = observe(&spec, &[], &set)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let planned = plan(PlanInput::new(&spec, &graph, &before));
            prop_assert_eq!(&planned, &plan(PlanInput::new(&spec, &graph, &before)));
            check_plan(&spec, &before, &planned)?;
            check_waits(&graph, &planned)?;
            if planned.is_empty() && planned.held.is_empty() {
                break;
            }
            prop_assert!(
                step < 11,
                "no convergence after 12 steps; last plan:\n{last}"
            );
            last = planned.to_text();
            apply_startable(&sim, &spec, &planned)
                .await
                .map_err(TestCaseError::fail)?;
            // Instances judged starting pass their checks by the next look; a group that
            // was degraded recovers (its shared dependency came back).
            for (_, i) in before.iter() {
                let recovers = i.state == InstanceState::Starting
                    || (i.state == InstanceState::Unhealthy
                        && planned.held.contains_key(&i.tags.group));
                if recovers {
                    let _ = sim.set_state(&i.id, InstanceState::Running).await;
                }
            }
        }

        // Every allocated slot has exactly one live, current instance; nothing else lives.
        let after = observe(&spec, &[], &set)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let live = live_per_slot(&after);
        for (key, instances) in &live {
            prop_assert_eq!(
                instances.len(),
                1,
                "slot {:?} has {} live instances",
                key,
                instances.len()
            );
        }
        let wanted: usize = spec.groups.iter().map(|g| g.allocation.len()).sum();
        prop_assert_eq!(live.len(), wanted);
        for group in &spec.groups {
            for slot in group.slots() {
                let key = (group.name.clone(), slot.to_string());
                let hash = hash_of(&spec, &group.name);
                prop_assert!(
                    live.get(&key).is_some_and(|l| l[0].tags.hash == hash),
                    "slot {key:?} is not served by a current instance"
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn applying_what_may_start_converges_within_budget(w in world()) {
        check_world(&w)?;
    }
}

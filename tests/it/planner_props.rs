//! Planner invariants over random worlds, applied to the real sim provider:
//! applying a plan and planning again gives an empty plan; no slot ends with two live
//! instances; nothing is destroyed that the spec still wants.

use std::collections::{BTreeMap, HashSet};

use engine::graph::GroupGraph;
use engine::lang::{evaluate_source, EvalOptions};
use engine::plan::{plan, ActionKind, Plan, PlanInput};
use engine::provider::{
    observe, InstanceState, InstanceTags, Observed, ObservedInstance, Provider, ProvisionRequest,
};
use engine::spec::Spec;
use proptest::prelude::*;
use providers::sim::SimProvider;

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
        0u32..5,
        proptest::sample::subsequence(vec!["x", "y", "z"], 0..=3),
        0u32..4,
        proptest::collection::vec(
            (0..GROUPS.len(), 0..SLOTS.len(), any::<bool>(), state),
            0..14,
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

/// Applies a plan action by action, in list order, through the Provider trait.
async fn apply(sim: &SimProvider, spec: &Spec, planned: &Plan) -> Result<(), String> {
    for action in &planned.actions {
        let provision = || {
            let t = InstanceTags {
                project: spec.project.clone(),
                group: action.group.clone(),
                slot: action.slot.to_string(),
                hash: action
                    .hash
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            };
            ProvisionRequest {
                group: action.group.clone(),
                slot: action.slot.clone(),
                tags: t,
                labels: BTreeMap::new(),
                props: BTreeMap::new(),
                command: vec![],
                env: BTreeMap::new(),
                files: BTreeMap::new(),
                workdir: None,
                address: None,
                stop_timeout: engine::spec::Duration::from_secs(1),
            }
        };
        if action.action != ActionKind::Create
            && action.action != ActionKind::Destroy
            && action.instance.is_none()
        {
            return Err(format!("{:?} without an instance", action));
        }
        if let Some(old) = &action.instance {
            sim.destroy(old).await.map_err(|e| e.to_string())?;
        }
        if action.action != ActionKind::Destroy {
            sim.provision(provision())
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
    let state_dir = dir.path().join(".tend");
    let sim = SimProvider::new(&state_dir);
    let set = providers::all(&state_dir);
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
            };
            sim.insert(ObservedInstance {
                id: String::new(),
                tags: t,
                labels: BTreeMap::new(),
                address: None,
                state: *state,
                started_at: started_at as u64 + 1,
            })
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let before = observe(&spec, &set)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let input = PlanInput {
            spec: &spec,
            graph: &graph,
            observed: &before,
            expectations: &[],
            previous: None,
        };
        let first = plan(input);

        // Nothing the spec still wants is destroyed: a destroy in an allocated slot only
        // removes a dead instance or a duplicate whose slot keeps a live instance.
        let destroyed: HashSet<&str> = first
            .actions
            .iter()
            .filter(|a| a.action == ActionKind::Destroy)
            .filter_map(|a| a.instance.as_deref())
            .collect();
        let before_live = live_per_slot(&before);
        for action in first
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

        apply(&sim, &spec, &first)
            .await
            .map_err(TestCaseError::fail)?;
        let after = observe(&spec, &set)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = plan(PlanInput {
            observed: &after,
            ..input
        });
        prop_assert!(
            again.is_empty(),
            "second plan not empty:\n{}\nfirst:\n{}",
            again.to_text(),
            first.to_text()
        );

        // Every allocated slot has exactly one live, current instance; nothing else lives.
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
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn applying_a_plan_converges_in_one_step(w in world()) {
        check_world(&w)?;
    }
}

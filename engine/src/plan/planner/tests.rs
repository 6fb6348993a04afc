//! Unit tests of the planner's budgets. Golden plans (`testdata/plans/`) and the proptests
//! in `tests/it/planner_props.rs` cover the rest.

use super::*;
use crate::provider::InstanceTags;
use crate::spec::{Allocation, Flavor, ProviderSpec, Rolling};

fn group(name: &str, size: u32, update: UpdatePolicy) -> Group {
    Group {
        name: name.into(),
        allocation: Allocation::Size(size),
        provider: ProviderSpec {
            kind: "sim".into(),
            props: Default::default(),
        },
        flavor: Flavor {
            command: vec!["srv".into()],
            ..Flavor::default()
        },
        depends_on: vec![],
        reads_groups: vec![],
        update,
        origin: None,
        expose: None,
    }
}

fn rolling(max_unavailable: u32, max_surge: u32) -> UpdatePolicy {
    UpdatePolicy::Rolling(Rolling {
        max_unavailable,
        max_surge,
        ..Rolling::default()
    })
}

fn spec(groups: Vec<Group>) -> Spec {
    Spec {
        project: "p".into(),
        groups,
        ports: Default::default(),
    }
}

fn instance(group: &str, slot: u32, hash: &str, state: InstanceState) -> ObservedInstance {
    ObservedInstance {
        id: format!("{group}-{slot}-{hash}"),
        tags: InstanceTags {
            project: "p".into(),
            group: group.into(),
            slot: slot.to_string(),
            hash: hash.into(),
            ports: Default::default(),
            format: crate::format::INSTANCE,
        },
        labels: Default::default(),
        address: None,
        state,
        started_at: u64::from(slot) + 1,
        ended: None,
        remains: 0,
        ports: Default::default(),
    }
}

/// Plans `spec` against `instances` with `in_flight` running.
fn plan_of(spec: &Spec, instances: Vec<ObservedInstance>, in_flight: &[Action]) -> Plan {
    let graph = GroupGraph::build(spec).unwrap_or_else(|e| panic!("{e}"));
    let observed = Observed::from_instances(&spec.project, "sim", instances);
    plan(PlanInput {
        in_flight,
        ..PlanInput::new(spec, &graph, &observed)
    })
}

fn startable(plan: &Plan) -> Vec<String> {
    plan.startable()
        .map(|a| format!("{} {}/{}", a.action.name(), a.group, a.slot))
        .collect()
}

#[test]
fn instances_of_another_project_are_never_touched() {
    let spec = spec(vec![group("web", 1, UpdatePolicy::default())]);
    let mut theirs = instance("cache", 0, "x", InstanceState::Running);
    theirs.tags.project = "theirs".into();
    // Built for the wrong project on purpose: the planner still checks every instance.
    let mut observed = Observed::new("theirs");
    observed.add("sim", vec![theirs]);
    let graph = GroupGraph::build(&spec).unwrap_or_else(|e| panic!("{e}"));
    let planned = plan(PlanInput::new(&spec, &graph, &observed));
    assert_eq!(planned.summary.destroy, 0);
    assert_eq!(planned.summary.create, 1);
}

#[test]
fn an_unhealthy_instance_uses_the_budget_a_rollout_would_take() {
    let g = group("web", 4, rolling(1, 0));
    let current = SpecHash::of(&g).to_string();
    let spec = spec(vec![g]);
    // Slot 0 is already on the new version and fails its checks: nothing else may go.
    let planned = plan_of(
        &spec,
        vec![
            instance("web", 0, &current, InstanceState::Starting),
            instance("web", 1, "old", InstanceState::Running),
            instance("web", 2, "old", InstanceState::Running),
            instance("web", 3, "old", InstanceState::Running),
        ],
        &[],
    );
    assert_eq!(planned.summary.replace, 3);
    assert!(startable(&planned).is_empty(), "{}", planned.to_text());
    let waits = planned.actions[0].waits.clone().unwrap_or_default();
    assert!(
        waits.starts_with("1 of 4 instances are unavailable and max_unavailable is 1"),
        "{waits}"
    );
}

#[test]
fn a_running_batch_holds_the_next_one_and_counts_as_unavailable() {
    let g = group("web", 4, rolling(1, 0));
    let current = SpecHash::of(&g);
    let spec = spec(vec![g]);
    let first = plan_of(
        &spec,
        (0..4)
            .map(|s| instance("web", s, "old", InstanceState::Running))
            .collect(),
        &[],
    );
    assert_eq!(startable(&first), ["replace web/0"]);
    // While web/0 is being replaced, nothing else starts.
    let running = vec![first.actions[0].clone()];
    let second = plan_of(
        &spec,
        (1..4)
            .map(|s| instance("web", s, "old", InstanceState::Running))
            .collect(),
        &running,
    );
    assert!(startable(&second).is_empty(), "{}", second.to_text());
    assert!(second.actions[0].in_flight);
    assert_eq!(second.actions[1].after, [0]);
    assert_eq!(second.actions[1].batch, Some(2));
    // Once it is done, the next one goes.
    let third = plan_of(
        &spec,
        std::iter::once(instance("web", 0, current.as_str(), InstanceState::Running))
            .chain((1..4).map(|s| instance("web", s, "old", InstanceState::Running)))
            .collect(),
        &[],
    );
    assert_eq!(startable(&third), ["replace web/1"]);
}

#[test]
fn surge_goes_ahead_while_an_instance_is_down_but_in_place_does_not() {
    let spec = spec(vec![group("web", 4, rolling(1, 1))]);
    let planned = plan_of(
        &spec,
        vec![
            instance("web", 0, "old", InstanceState::Running),
            instance("web", 1, "old", InstanceState::Running),
            instance("web", 2, "old", InstanceState::Running),
            instance("web", 3, "old", InstanceState::Dead),
        ],
        &[],
    );
    assert_eq!(startable(&planned), ["heal web/3", "replace web/0"]);
    let surge: Vec<bool> = planned
        .actions
        .iter()
        .filter(|a| a.action == ActionKind::Replace)
        .map(|a| a.surge)
        .collect();
    assert_eq!(surge, [true, true, false]);
}

#[test]
fn unhealthy_instances_are_replaced_within_the_budget_and_not_at_all_when_most_are() {
    let g = group("web", 6, rolling(1, 0));
    let current = SpecHash::of(&g).to_string();
    let spec = spec(vec![g]);
    let state = |sick: &[u32]| -> Vec<ObservedInstance> {
        (0..6)
            .map(|s| {
                let st = if sick.contains(&s) {
                    InstanceState::Unhealthy
                } else {
                    InstanceState::Running
                };
                instance("web", s, &current, st)
            })
            .collect()
    };
    let two = plan_of(&spec, state(&[1, 4]), &[]);
    assert_eq!(two.summary.heal, 2);
    assert_eq!(startable(&two), ["heal web/1"]);
    assert!(two.held.is_empty());

    let four = plan_of(&spec, state(&[0, 1, 2, 3]), &[]);
    assert!(four.actions.is_empty(), "{}", four.to_text());
    assert_eq!(
        four.held.get("web").map(Hold::name),
        Some("degraded"),
        "{:?}",
        four.held
    );

    // One instance of one: there is nothing to compare with, so it is replaced.
    let lone = group("solo", 1, rolling(1, 0));
    let lone_hash = SpecHash::of(&lone).to_string();
    let single = plan_of(
        &self::spec(vec![lone]),
        vec![instance("solo", 0, &lone_hash, InstanceState::Unhealthy)],
        &[],
    );
    assert_eq!(startable(&single), ["heal solo/0"]);
}

#[test]
fn a_paused_group_heals_dead_instances_at_their_own_hash_and_replaces_nothing() {
    let g = group("web", 3, rolling(1, 0));
    let current = SpecHash::of(&g);
    let spec = spec(vec![g]);
    let graph = GroupGraph::build(&spec).unwrap_or_else(|e| panic!("{e}"));
    let observed = Observed::from_instances(
        "p",
        "sim",
        vec![
            instance("web", 0, current.as_str(), InstanceState::Unhealthy),
            instance("web", 1, "old", InstanceState::Dead),
            instance("web", 2, "old", InstanceState::Running),
        ],
    );
    let mut paused = BTreeMap::new();
    paused.insert(
        "web".to_owned(),
        Paused {
            hash: current.clone(),
            failed: current.clone(),
            reason: "new instance web/0 never turned healthy".into(),
            known: [SpecHash::from_tag("old")].into_iter().collect(),
            fallback: Some(SpecHash::from_tag("old")),
            serving: vec![SpecHash::from_tag("old")],
        },
    );
    let planned = plan(PlanInput {
        paused: &paused,
        ..PlanInput::new(&spec, &graph, &observed)
    });
    let kinds: Vec<(String, Option<String>)> = planned
        .actions
        .iter()
        .map(|a| {
            (
                format!("{} {}", a.action.name(), a.slot),
                a.hash.as_ref().map(|h| h.to_string()),
            )
        })
        .collect();
    assert_eq!(kinds, [("heal 1".to_owned(), Some("old".to_owned()))]);
    assert_eq!(planned.held.get("web").map(Hold::name), Some("paused"));
}

#[test]
fn a_group_moved_to_another_provider_is_made_by_the_new_one() {
    let mut g = group("web", 1, rolling(1, 0));
    g.provider.kind = "docker".into();
    let spec = spec(vec![g]);
    let planned = plan_of(
        &spec,
        vec![instance("web", 0, "old", InstanceState::Running)],
        &[],
    );
    let a = &planned.actions[0];
    assert_eq!(a.action, ActionKind::Replace);
    assert_eq!(a.provider, "docker");
    assert_eq!(a.instance_provider.as_deref(), Some("sim"));
    assert_eq!(a.holder(), "sim");
}

#[test]
fn a_group_whose_provider_cannot_be_observed_gets_no_action() {
    let spec = spec(vec![group("web", 2, UpdatePolicy::default())]);
    let graph = GroupGraph::build(&spec).unwrap_or_else(|e| panic!("{e}"));
    let mut observed = Observed::new("p");
    observed
        .unobserved
        .insert("sim".into(), "the engine is down".into());
    let planned = plan(PlanInput::new(&spec, &graph, &observed));
    assert!(planned.actions.is_empty());
    assert_eq!(planned.held.get("web").map(Hold::name), Some("unobserved"));
}

/// Every index the plan's JSON holds that says what waits for what: `after`,
/// `after_barriers` and the actions of each barrier.
fn edges_in_json(planned: &Plan) -> usize {
    let json: serde_json::Value =
        serde_json::from_str(&planned.to_json()).unwrap_or_else(|e| panic!("{e}"));
    let len = |v: &serde_json::Value, key: &str| v[key].as_array().map_or(0, Vec::len);
    let listed = |key: &str| json[key].as_array().cloned().unwrap_or_default();
    let from_actions: usize = listed("actions")
        .iter()
        .map(|a| len(a, "after") + len(a, "after_barriers"))
        .sum();
    let in_barriers: usize = listed("barriers").iter().map(|b| len(b, "actions")).sum();
    from_actions + in_barriers
}

fn indexes_of(planned: &Plan, group: &str) -> Vec<usize> {
    (0..planned.actions.len())
        .filter(|i| planned.actions[*i].group == group)
        .collect()
}

#[test]
fn a_group_of_1000_waiting_for_a_group_of_1000_takes_2000_entries_not_a_million() {
    let db = group("db", 1000, UpdatePolicy::default());
    let mut web = group("web", 1000, UpdatePolicy::default());
    web.depends_on = vec!["db".into()];
    let spec = spec(vec![db, web]);
    let planned = plan_of(&spec, vec![], &[]);
    assert_eq!(planned.summary.create, 2000);
    // 1000 creates of db in one barrier, and one reference to it from each web create.
    assert_eq!(edges_in_json(&planned), 2000);
    assert_eq!(planned.barriers.len(), 1);
    // Still exact: each create of web waits for every create of db, db's for nothing.
    let (db, web) = (indexes_of(&planned, "db"), indexes_of(&planned, "web"));
    assert_eq!(db.len(), 1000);
    for i in &web {
        assert_eq!(planned.waits_for(*i), db);
    }
    for i in &db {
        assert!(planned.waits_for(*i).is_empty());
    }
    assert_eq!(planned.startable().count(), 1000);

    // Scaled down to nothing: each destroy of db waits for every destroy of web.
    let scaled: Vec<Group> = spec
        .groups
        .iter()
        .map(|g| Group {
            allocation: Allocation::Size(0),
            ..g.clone()
        })
        .collect();
    let running: Vec<ObservedInstance> = ["db", "web"]
        .iter()
        .flat_map(|g| (0..1000).map(move |s| instance(g, s, "x", InstanceState::Running)))
        .collect();
    let planned = plan_of(
        &Spec {
            groups: scaled,
            ..spec
        },
        running,
        &[],
    );
    assert_eq!(planned.summary.destroy, 2000);
    assert_eq!(edges_in_json(&planned), 2000);
    let (db, web) = (indexes_of(&planned, "db"), indexes_of(&planned, "web"));
    for i in &db {
        assert_eq!(planned.waits_for(*i), web);
    }
    assert!(planned.to_text().contains("; after web's destroys\n"));
}

#[test]
fn rolling_batches_wait_for_the_whole_batch_before_them_once() {
    // Batches of 3 (one in place, two surging): each replace of batch 2 waits for the
    // three of batch 1 through one barrier.
    let g = group("web", 9, rolling(1, 2));
    let spec = spec(vec![g]);
    let planned = plan_of(
        &spec,
        (0..9)
            .map(|s| instance("web", s, "old", InstanceState::Running))
            .collect(),
        &[],
    );
    let batch = |n: u32| -> Vec<usize> {
        (0..planned.actions.len())
            .filter(|i| planned.actions[*i].batch == Some(n))
            .collect()
    };
    assert_eq!((batch(1).len(), batch(2).len(), batch(3).len()), (3, 3, 3));
    for n in 2..=3 {
        for i in batch(n) {
            assert_eq!(planned.waits_for(i), batch(n - 1));
            assert_eq!(planned.actions[i].after_barriers.len(), 1);
        }
    }
    let kinds: Vec<(BarrierKind, Option<u32>)> =
        planned.barriers.iter().map(|b| (b.kind, b.batch)).collect();
    assert_eq!(
        kinds,
        [(BarrierKind::Batch, Some(1)), (BarrierKind::Batch, Some(2))]
    );
    assert_eq!(edges_in_json(&planned), 6 + 6);
}

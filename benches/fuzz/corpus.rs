//! The seed corpus of each byte target, made in-process by tend's own writers from real
//! values, so that it is true to the format.

use std::collections::BTreeMap;
use std::path::Path;

use engine::controller::report::Report;
use engine::graph::GroupGraph;
use engine::lang::{evaluate_file, EvalOptions};
use engine::plan::{plan, PlanInput, SavedPlan, SAVED_PLAN_FORMAT};
use engine::provider::{InstanceState, InstanceTags, Observed, ObservedInstance, Provider};
use engine::reconcile::GroupPhase;
use engine::spec::{Spec, SpecHash};
use engine::store::{FailedRollout, LockHolder, Store, Version};
use providers::plugin::protocol::methods::{
    Capabilities, DescribeResult, InitializeResult, Instance, PluginInfo, ProvisionResult, Timeouts,
};
use providers::plugin::protocol::{encode, ErrorCode, ErrorData, Id, Message, RpcError};
use serde_json::json;

use crate::targets::{base_spec, HistoryEntry, Sources};

/// Seeds by target name.
pub type Corpus = BTreeMap<&'static str, Vec<Vec<u8>>>;

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("cannot make the seed corpus: {what}: {e}")
}

/// Every byte target's seeds.
pub fn build() -> Corpus {
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail("a temporary folder", e));
    let specs = specs();
    let mut corpus = Corpus::new();
    corpus.insert("saved_plan", saved_plans(dir.path(), &specs));
    corpus.insert("state", state_files(&dir.path().join("state"), &specs));
    corpus.insert("etcd_values", etcd_values(&specs));
    corpus.insert("plugin_reply", plugin_replies());
    corpus.insert("terraform_json", terraform());
    corpus
}

/// The base spec and two examples.
fn specs() -> Vec<Spec> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut specs = vec![base_spec().unwrap_or_else(|e| fail("the base spec", e))];
    for example in ["examples/shop/main.star", "examples/multi-tier/main.ncl"] {
        let spec = evaluate_file(&repo.join(example), &EvalOptions::default())
            .unwrap_or_else(|e| fail(example, e));
        specs.push(spec);
    }
    specs
}

/// Instances of `spec`: one per slot, one of them outdated, one dead, one stray.
fn observed(spec: &Spec) -> Observed {
    let mut instances = Vec::new();
    for group in &spec.groups {
        let hash = SpecHash::of(group).to_string();
        for (i, slot) in group.slots().iter().enumerate() {
            let (hash, state) = match i {
                0 => ("0ld0ld0ld0ld", InstanceState::Running),
                1 => (hash.as_str(), InstanceState::Dead),
                _ => (hash.as_str(), InstanceState::Running),
            };
            instances.push(instance(spec, &group.name, &slot.to_string(), hash, state));
        }
    }
    instances.push(instance(
        spec,
        "gone",
        "0",
        "0ld0ld0ld0ld",
        InstanceState::Running,
    ));
    Observed::from_instances(&spec.project, "sim", instances)
}

fn instance(
    spec: &Spec,
    group: &str,
    slot: &str,
    hash: &str,
    state: InstanceState,
) -> ObservedInstance {
    ObservedInstance {
        id: format!("sim-{group}-{slot}"),
        tags: InstanceTags {
            project: spec.project.clone(),
            group: group.to_owned(),
            slot: slot.to_owned(),
            hash: hash.to_owned(),
            ports: vec![("http".to_owned(), 20001)],
            format: engine::format::INSTANCE,
        },
        labels: [("tend.key".to_owned(), "k1".to_owned())]
            .into_iter()
            .collect(),
        address: Some("127.0.0.1:20001".to_owned()),
        ports: [("http".to_owned(), 20001)].into_iter().collect(),
        state,
        started_at: 1_700_000_000_000,
        ended: None,
        remains: 0,
    }
}

/// `tend plan -o` files, planned against nothing and against instances.
fn saved_plans(dir: &Path, specs: &[Spec]) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let graph = GroupGraph::build(spec).unwrap_or_else(|e| fail("a graph", e));
        for observed in [Observed::new(&spec.project), observed(spec)] {
            let saved = SavedPlan {
                format: SAVED_PLAN_FORMAT,
                tend_version: env!("CARGO_PKG_VERSION").to_owned(),
                spec_path: "main.star".to_owned(),
                spec_fingerprint: spec.fingerprint(),
                observed_fingerprint: observed.fingerprint(),
                spec: spec.clone(),
                plan: plan(PlanInput::new(spec, &graph, &observed)),
            };
            let path = dir.join(format!("plan-{i}-{}.json", seeds.len()));
            saved
                .write(&path)
                .unwrap_or_else(|e| fail("a saved plan", e));
            seeds.push(read(&path));
        }
    }
    seeds
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| fail(&path.display().to_string(), e))
}

/// A failed rollout of the base spec's `web`, rolled back to an older version.
fn rollouts(spec: &Spec) -> BTreeMap<String, FailedRollout> {
    let mut rollouts = BTreeMap::new();
    if let Some(web) = spec.group("web") {
        rollouts.insert(
            "web".to_owned(),
            FailedRollout {
                hash: SpecHash::of(web),
                serial: 2,
                reason: "web/1 did not turn healthy within 30s".to_owned(),
                at_ms: 1_700_000_000_000,
                previous: Some(Version {
                    hash: SpecHash::of(web),
                    template: web.template(),
                }),
                rolled_back: true,
                rollback_failed: Some("web/1 died".to_owned()),
            },
        );
    }
    rollouts
}

fn report() -> Report {
    Report {
        pid: std::process::id(),
        host: Some("fuzz".to_owned()),
        listen: Some("127.0.0.1:7777".to_owned()),
        serial: 3,
        converged: false,
        groups: [
            ("web".to_owned(), GroupPhase::Progressing),
            (
                "db".to_owned(),
                GroupPhase::Paused {
                    reason: "db/a failed".to_owned(),
                },
            ),
        ]
        .into_iter()
        .collect(),
        backoff: BTreeMap::new(),
        unobserved: BTreeMap::new(),
        balancers: Vec::new(),
    }
}

/// The files of a local state folder, each written by the code that writes it for real.
fn state_files(dir: &Path, specs: &[Spec]) -> Vec<Vec<u8>> {
    let store = Store::new(dir);
    for spec in specs {
        store.commit(spec).unwrap_or_else(|e| fail("a commit", e));
    }
    store
        .save_failed_rollouts(&rollouts(&specs[0]))
        .unwrap_or_else(|e| fail("rollouts", e));
    report()
        .write(&store)
        .unwrap_or_else(|e| fail("a report", e));
    let lock = store.lock("apply").unwrap_or_else(|e| fail("the lock", e));
    let holder = serde_json::to_vec(lock.holder()).unwrap_or_else(|e| fail("the holder", e));
    let mut seeds = vec![
        read(&dir.join("state.json")),
        read(&dir.join("history/000001.json")),
        read(&dir.join("rollouts.json")),
        read(&dir.join("controller.json")),
        holder,
        sim_world(dir, &specs[0]),
    ];
    seeds.push(
        serde_json::to_vec(&LockHolder {
            host: Some("elsewhere".to_owned()),
            ..lock.holder().clone()
        })
        .unwrap_or_default(),
    );
    seeds
}

/// A sim world's file after a few provisions and a destroy.
fn sim_world(dir: &Path, spec: &Spec) -> Vec<u8> {
    let sim = providers::sim::SimProvider::new(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail("a runtime", e));
    runtime.block_on(async {
        let observed = observed(spec);
        let mut made = Vec::new();
        for (_, i) in observed.iter() {
            made.push(
                sim.insert(i.clone())
                    .await
                    .unwrap_or_else(|e| fail("a sim instance", e)),
            );
        }
        if let Some(first) = made.first() {
            let _ = sim.destroy(first).await;
        }
    });
    read(&dir.join("sim/world.jsonl"))
}

/// Values of each key of an etcd store, made as the etcd store makes them.
fn etcd_values(specs: &[Spec]) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut push = |value: serde_json::Result<Vec<u8>>| {
        seeds.push(value.unwrap_or_else(|e| fail("an etcd value", e)));
    };
    for spec in specs {
        for group in &spec.groups {
            push(serde_json::to_vec(group));
        }
        push(serde_json::to_vec(&Sources {
            lineage: "0123456789abcdef".to_owned(),
            applied_at: 1_700_000_000_000,
            ports: spec.ports,
            groups: spec.groups.iter().map(|g| g.name.clone()).collect(),
            history: 4,
            commit: "0123456789abcdef-0000001234".to_owned(),
        }));
        push(serde_json::to_vec(&HistoryEntry {
            lineage: "0123456789abcdef".to_owned(),
            applied_at: 1_700_000_000_000,
            spec: spec.clone(),
        }));
    }
    push(serde_json::to_vec(&rollouts(&specs[0])));
    push(serde_json::to_vec(&report()));
    push(serde_json::to_vec(&engine::store::etcd::Intent {
        action: "create".to_owned(),
        group: "web".to_owned(),
        slot: "1".to_owned(),
        instance: String::new(),
        epoch: 7,
        at_ms: 1_700_000_000_000,
    }));
    push(serde_json::to_vec(
        &engine::store::etcd::Member::this_process("run", Some("127.0.0.1:7777".to_owned())),
    ));
    seeds
}

fn line(message: Message) -> Vec<u8> {
    encode(&message).unwrap_or_else(|e| fail("a plugin message", e))
}

fn answer(id: i64, result: serde_json::Value) -> Vec<u8> {
    line(Message::Response {
        id: Some(Id::Number(id)),
        outcome: Ok(result),
    })
}

/// What a plugin writes on its stdout during a session: the handshake, a describe, a
/// provision, an error, a notification, a request of its own.
fn plugin_replies() -> Vec<Vec<u8>> {
    let info = InitializeResult {
        protocol_version: 1,
        plugin: PluginInfo {
            name: "fuzz".to_owned(),
            version: "1.0".to_owned(),
        },
        capabilities: Capabilities {
            watch: true,
            fencing: true,
            max_concurrency: 4,
        },
        timeouts: Timeouts {
            provision_ms: Some(30_000),
            destroy_ms: Some(10_000),
        },
    };
    let described = DescribeResult {
        instances: described(),
    };
    let to =
        |v: serde_json::Result<serde_json::Value>| v.unwrap_or_else(|e| fail("a plugin result", e));
    let mut session = Vec::new();
    session.extend(answer(1, to(serde_json::to_value(&info))));
    session.extend(answer(2, to(serde_json::to_value(&described))));
    session.extend(answer(
        3,
        to(serde_json::to_value(ProvisionResult {
            id: "i-3".to_owned(),
        })),
    ));
    session.extend(line(Message::Response {
        id: Some(Id::Number(4)),
        outcome: Err(RpcError {
            code: ErrorCode::Unavailable,
            message: "the backend is down".to_owned(),
            data: Some(ErrorData {
                retryable: Some(true),
                retry_after_ms: Some(500),
                instance_id: Some("i-4".to_owned()),
            }),
        }),
    }));
    session.extend(line(Message::notification(
        "instance.changed",
        json!({"id": "i-1"}),
    )));
    session.extend(line(Message::request(9, "$/ping", json!({}))));
    vec![session, answer(2, to(serde_json::to_value(&described)))]
}

/// Instances a plugin describes: the base spec's, tagged as tend tags them.
fn described() -> Vec<Instance> {
    let spec = base_spec().unwrap_or_else(|e| fail("the base spec", e));
    observed(&spec)
        .iter()
        .map(|(_, i)| {
            let mut tags = i.tags.to_map();
            tags.extend(i.labels.clone());
            Instance {
                id: i.id.clone(),
                tags,
                state: format!("{:?}", i.state).to_lowercase(),
                address: i.address.clone(),
                started_at: Some(i.started_at),
            }
        })
        .collect()
}

/// Terraform's JSON: `terraform show -json` of a group's state, the `main.tf.json` tend
/// writes, and the lines of `terraform apply -json`.
fn terraform() -> Vec<Vec<u8>> {
    use providers::terraform::reading::config_render;
    let values = json!({"run": "/tmp/tend-fuzz/run/0-aa", "memory": "/dev/shm/tend-fuzz/0-aa",
        "tags": {"tend.project": "fuzz", "tend.group": "web", "tend.slot": "0", "tend.hash": "h",
                 "tend.ports": "http=20001"}, "command": ["srv"], "workdir": "/tmp/w", "address": ""});
    let show = json!({"format_version": "1.0", "terraform_version": "1.9.8", "values": {"root_module": {"resources": [
        {"address": "terraform_data.web[\"0-aa\"]", "mode": "managed", "type": "terraform_data",
         "name": "web", "index": "0-aa", "provider_name": "terraform.io/builtin/terraform",
         "schema_version": 0, "values": {"id": "u1", "input": values, "output": values,
         "triggers_replace": values}, "sensitive_values": {}},
        {"address": "terraform_data.web[\"1-bb\"]", "mode": "managed", "type": "terraform_data",
         "name": "web", "index": "1-bb", "tainted": true, "values": {"id": "u2", "input": {"run": "/tmp/r/1-bb"}}}]}}});
    let mut instances = serde_json::Map::new();
    instances.insert("0-aa".to_owned(), values.clone());
    let config = config_render("web", &instances);
    let events = [
        json!({"@level": "info", "@message": "terraform_data.web[\"0-aa\"]: Creating...", "type": "apply_start",
               "hook": {"resource": {"addr": "terraform_data.web[\"0-aa\"]"}, "action": "create"}}),
        json!({"@level": "info", "@message": "terraform_data.web[\"0-aa\"]: Creation complete", "type": "apply_complete",
               "hook": {"resource": {"addr": "terraform_data.web[\"0-aa\"]"}, "action": "create", "id_key": "id", "id_value": "u1"}}),
        json!({"@level": "error", "@message": "Error: local-exec provisioner error", "type": "diagnostic",
               "diagnostic": {"severity": "error", "summary": "local-exec provisioner error",
               "detail": "Error running command: exit status 127", "address": "terraform_data.web[\"1-bb\"]"}}),
        json!({"@level": "info", "type": "change_summary", "@message": "Apply complete! Resources: 1 added, 0 changed, 0 destroyed."}),
    ];
    let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    vec![
        serde_json::to_vec_pretty(&show).unwrap_or_default(),
        serde_json::to_vec_pretty(&config).unwrap_or_default(),
        (lines.join("\n") + "\n").into_bytes(),
    ]
}

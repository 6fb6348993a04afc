//! Golden plan tests: each folder under `testdata/plans/` holds a spec (`main.star`), an
//! observed state (`observed.json`), optionally `expectations.json` and a `previous.star`;
//! the plan's text and JSON are snapshots beside them.
//!
//! In `observed.json`, `"hash": "current"` stands for the group's spec hash, so fixtures do
//! not change when the model does; `"provider"` names the provider holding an instance
//! (default `sim`).

use std::collections::BTreeMap;
use std::path::Path;

use engine::graph::GroupGraph;
use engine::lang::{evaluate_file, EvalOptions};
use engine::plan::{plan, Expectation, PlanInput};
use engine::provider::{InstanceState, InstanceTags, Observed, ObservedInstance};
use engine::spec::{Spec, SpecHash};
use serde::Deserialize;

use crate::harness::{repo, snapshots_in};

/// One observed instance in a fixture.
#[derive(Deserialize)]
struct Fixture {
    id: String,
    group: String,
    slot: String,
    hash: String,
    state: InstanceState,
    started_at: u64,
    #[serde(default)]
    project: Option<String>,
    /// The provider holding it (default `sim`).
    #[serde(default)]
    provider: Option<String>,
}

fn spec_of(path: &Path) -> Spec {
    match evaluate_file(path, &EvalOptions::default()) {
        Ok(spec) => spec,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

fn observed_of(dir: &Path, spec: &Spec) -> Observed {
    let text = std::fs::read_to_string(dir.join("observed.json")).unwrap_or_else(|_| "[]".into());
    let fixtures: Vec<Fixture> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}/observed.json: {e}", dir.display()));
    let mut observed = Observed::new(&spec.project);
    for f in fixtures {
        let hash = match (f.hash.as_str(), spec.group(&f.group)) {
            ("current", Some(group)) => SpecHash::of(group).to_string(),
            (other, _) => other.to_owned(),
        };
        let provider = f.provider.unwrap_or_else(|| "sim".to_owned());
        let instance = ObservedInstance {
            id: f.id,
            tags: InstanceTags {
                project: f.project.unwrap_or_else(|| spec.project.clone()),
                group: f.group,
                slot: f.slot,
                hash,
                ports: Default::default(),
                format: engine::format::INSTANCE,
            },
            labels: BTreeMap::new(),
            address: None,
            state: f.state,
            started_at: f.started_at,
            ended: None,
            remains: 0,
            ports: Default::default(),
        };
        observed.add(&provider, vec![instance]);
    }
    observed
}

#[test]
fn golden_plans_match_their_snapshots() {
    let root = repo().join("testdata/plans");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    cases.sort();
    assert!(cases.len() >= 12, "only {} plan cases", cases.len());
    for dir in cases {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let spec = spec_of(&dir.join("main.star"));
        let graph = GroupGraph::build(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        let observed = observed_of(&dir, &spec);
        let expectations: Vec<Expectation> = std::fs::read_to_string(dir.join("expectations.json"))
            .map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("{name}: {e}")))
            .unwrap_or_default();
        let previous = dir.join("previous.star");
        let previous = previous.exists().then(|| spec_of(&previous));
        let input = PlanInput {
            expectations: &expectations,
            previous: previous.as_ref(),
            ..PlanInput::new(&spec, &graph, &observed)
        };
        let first = plan(input);
        assert_eq!(first, plan(input), "{name}: planning twice gave two plans");
        let settings = snapshots_in(&dir);
        settings.bind(|| {
            insta::assert_snapshot!("plan_text", first.to_text());
            insta::assert_snapshot!("plan_json", first.to_json());
        });
    }
}

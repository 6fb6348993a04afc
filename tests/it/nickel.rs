//! Nickel specs end to end: the examples written in both languages plan the same, byte for
//! byte; a Nickel spec is applied, healed and destroyed for real; a folder with only a
//! `main.ncl` is read without naming it.

use crate::harness::{repo, tend_ok};
use crate::process::wait_for;
use crate::process::Project;
use crate::run::{converged, Running};

#[test]
fn the_examples_plan_the_same_in_both_languages() {
    for (example, actions) in [("hello", 3), ("multi-tier", 5)] {
        let dir = repo().join("examples").join(example);
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plan = |spec: &str| {
            let state_dir = state.path().join(spec);
            let state_dir = state_dir.to_string_lossy();
            tend_ok(&dir, &["plan", spec, "--json", "--state-dir", &state_dir])
        };
        let star = plan("main.star");
        let ncl = plan("main.ncl");
        assert_eq!(star, ncl, "{example}: the plans differ");
        let parsed: serde_json::Value =
            serde_json::from_str(&ncl).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert_eq!(
            parsed["actions"].as_array().map(Vec::len),
            Some(actions),
            "{example}: {ncl}"
        );
        // The models (and so the spec hashes, which cover provider and flavor) are equal.
        let model = |spec: &str| tend_ok(&dir, &["validate", spec, "--json"]);
        assert_eq!(model("main.star"), model("main.ncl"), "{example}");
        let hashes = |spec: &str| {
            let path = dir.join(spec);
            let spec = engine::lang::evaluate_file(&path, &Default::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            spec.groups
                .iter()
                .map(|g| engine::spec::SpecHash::of(g).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(hashes("main.star"), hashes("main.ncl"), "{example}");
    }
}

const SLEEPERS: &str = r#"let tend = import "tend.ncl" in
{
  project = "it-nickel-sleepers",
  groups.sleepers = {
    size = 2,
    provider = { process = {} },
    flavor = { command = ["sleep", "300"], env = { NOTE = "{{ instance.slot }}" } },
    update = { rolling = { max_unavailable = 1 } },
  },
}
"#;

#[test]
fn a_nickel_spec_is_applied_healed_and_destroyed() {
    let p = Project::new("it-nickel-sleepers", "");
    std::fs::remove_file(p.path().join("main.star")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(p.path().join("main.ncl"), SLEEPERS).unwrap_or_else(|e| panic!("{e}"));
    // No spec named: ./main.ncl, since there is no ./main.star.
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 created"), "{out}");
    let live = p.live();
    assert_eq!(live.len(), 2, "{live:?}");
    crate::harness::signal(live[0].pid, "-9");
    let plan = p.ok(&["plan", "main.ncl"]);
    assert!(plan.contains("heal"), "{plan}");
    let out = p.ok(&["apply", "main.ncl", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    assert_eq!(p.live().len(), 2);
    p.ok(&["destroy", "--yes"]);
    assert!(p.live().is_empty(), "destroy left {:?}", p.live());
}

#[test]
fn main_star_comes_first_when_both_are_there() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let star = r#"project(name = "from-starlark")
group(name = "w", size = 1, provider = sim(), flavor = flavor(command = ["x"]))
"#;
    std::fs::write(
        dir.path().join("main.ncl"),
        r#"{ project = "from-nickel" }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let model = tend_ok(dir.path(), &["validate", "--json"]);
    assert!(model.contains("\"from-nickel\""), "{model}");
    std::fs::write(dir.path().join("main.star"), star).unwrap_or_else(|e| panic!("{e}"));
    let model = tend_ok(dir.path(), &["validate", "--json"]);
    assert!(model.contains("\"from-starlark\""), "{model}");
}

#[test]
fn run_watch_follows_a_nickel_spec() {
    let spec = |n: u32| {
        format!(
            r#"{{ project = "it-nickel-watch", groups.work = {{ size = {n}, provider = {{ process = {{}} }}, flavor = {{ command = ["sleep", "1000"] }} }} }}"#
        )
    };
    let p = Project::new("it-nickel-watch", "");
    std::fs::remove_file(p.path().join("main.star")).unwrap_or_else(|e| panic!("{e}"));
    let write = |text: &str| {
        std::fs::write(p.path().join("main.ncl"), text).unwrap_or_else(|e| panic!("{e}"))
    };
    write(&spec(1));
    let run = Running::start(&p, 19297, &["--watch"]);
    wait_for(|| p.live().len() == 1 && converged(&p));
    // A broken edit is reported, and the running spec kept.
    write("{ groups.work = { size = ");
    wait_for(|| {
        run.get("/events")
            .contains("the changed spec is not valid; keeping the running one")
    });
    assert_eq!(p.live().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&spec(3));
    wait_for(|| p.live().len() == 3 && converged(&p));
}

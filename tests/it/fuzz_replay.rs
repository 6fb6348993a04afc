//! Replays every input kept under `testdata/fuzz/<target>/` (the failures `cargo bench
//! --bench fuzz` found, once fixed, and hand-picked seeds) through the same target as the
//! fuzzer: each must be accepted or rejected with a clear error, without a panic or a hang.

#[path = "fuzz_targets.rs"]
#[allow(dead_code)]
mod targets;

use crate::harness::repo;

/// Replays the inputs kept for `name`; at least `fewest` of them.
fn replay(name: &str, fewest: usize) {
    let target = targets::by_name(name).unwrap_or_else(|| panic!("no target {name}"));
    let dir = repo().join("testdata/fuzz").join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == target.ext));
    files.sort();
    assert!(
        files.len() >= fewest,
        "only {} inputs kept in {}",
        files.len(),
        dir.display()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let input = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            targets::run_guarded(target, input)
                .err()
                .map(|why| format!("{}: {why}", path.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fuzz_kept_starlark_specs() {
    replay("starlark", 3);
}

#[test]
fn fuzz_kept_nickel_specs() {
    replay("nickel", 3);
}

#[test]
fn fuzz_kept_saved_plans() {
    replay("saved_plan", 2);
}

#[test]
fn fuzz_kept_state_files() {
    replay("state", 2);
}

#[test]
fn fuzz_kept_etcd_values() {
    replay("etcd_values", 2);
}

#[test]
fn fuzz_kept_plugin_replies() {
    replay("plugin_reply", 2);
}

#[test]
fn fuzz_kept_terraform_json() {
    replay("terraform_json", 2);
}

#[test]
fn fuzz_kept_templates() {
    replay("template", 2);
}

#[test]
fn fuzz_kept_values() {
    replay("values", 2);
}

//! `tend test` and `tend stdlib` as users run them.

use std::process::Command;

use crate::harness::{files_with_extension, repo, snapshots_in, text};

fn tend_ci(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(args)
        .current_dir(repo())
        .env("CI", "true")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_examples_and_the_stdlib_pass_their_own_tests() {
    let out = tend_ci(&["test", "examples", "stdlib"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let last = stdout.lines().last().unwrap_or("");
    let passed: usize = last
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        last.ends_with(" passed, 0 failed") && passed >= 25,
        "{last}"
    );
    // Every example and every stdlib module has a test file.
    for dir in [
        "examples/hello",
        "examples/multi-tier",
        "examples/etcd-cluster",
        "examples/shop",
    ] {
        assert!(
            stdout.contains(&format!("ok      {dir}/")),
            "{dir} has no passing test"
        );
    }
    for module in ["flavors", "health", "policies", "services"] {
        assert!(
            stdout.contains(&format!("ok      stdlib/{module}_test.star::")),
            "{module}"
        );
    }
}

#[test]
fn failures_show_where_and_why_and_the_other_files_still_run() {
    let out = tend_ci(&["test", "testdata/tend-test", "--max-steps", "100000"]);
    assert_eq!(out.status.code(), Some(1));
    snapshots_in(&repo().join("testdata/tend-test/snapshots")).bind(|| {
        insta::assert_snapshot!("failing_output", text(&out.stdout));
    });
}

#[test]
fn stdlib_lists_every_module_with_docstrings() {
    let out = tend_ci(&["stdlib"]);
    assert_eq!(out.status.code(), Some(0));
    snapshots_in(&repo().join("testdata/stdlib")).bind(|| {
        insta::assert_snapshot!("tend_stdlib", text(&out.stdout));
    });
}

#[test]
fn each_stdlib_module_evaluates_to_the_model_it_did() {
    let fixtures = files_with_extension(&repo().join("stdlib/fixtures"), "star");
    assert_eq!(fixtures.len(), 4);
    let settings = snapshots_in(&repo().join("testdata/stdlib"));
    for fixture in fixtures {
        let name = fixture
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let relative = format!("stdlib/fixtures/{name}.star");
        let out = tend_ci(&["validate", &relative, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        settings.bind(|| insta::assert_snapshot!(format!("module_{name}"), text(&out.stdout)));
    }
}

//! `tend test`

use std::path::PathBuf;

use engine::lang::EvalOptions;
use engine::testing::discover;
use engine::testing::{run_test_file, TestRun};

use crate::failure::Failure;

/// Runs every test found under `paths`; prints a line per test and `N passed, N failed`.
pub fn run(paths: Vec<PathBuf>, update: bool, max_steps: u64) -> Result<i32, Failure> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let files = discover(&paths);
    let run = TestRun {
        update,
        ci: std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        options: EvalOptions {
            root: None,
            max_steps,
            ..Default::default()
        },
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        for outcome in run_test_file(file, &run) {
            match &outcome.failure {
                None => {
                    passed += 1;
                    crate::outln!("ok      {}::{}", outcome.file, outcome.name);
                }
                Some(why) => {
                    failed += 1;
                    crate::outln!("FAILED  {}::{}", outcome.file, outcome.name);
                    for line in why.lines() {
                        crate::outln!("    {line}");
                    }
                }
            }
        }
    }
    if files.is_empty() {
        crate::outln!(
            "no *_test.star files under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    crate::outln!("{passed} passed, {failed} failed");
    Ok(if failed > 0 { 1 } else { 0 })
}

//! Every bad spec under `testdata/errors/` fails `tend validate` with exit status 1 and a
//! message with file:line:col and a caret, snapshotted beside it.

use crate::harness::{files_with_extension, repo, snapshots_in, tend, text};

#[test]
fn every_bad_spec_is_reported_with_its_location() {
    let dir = repo().join("testdata/errors");
    let cases = files_with_extension(&dir, "star");
    assert!(cases.len() >= 15, "only {} error cases", cases.len());
    let settings = snapshots_in(&dir.join("snapshots"));
    for case in cases {
        let name = case
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let relative = format!("testdata/errors/{name}.star");
        let output = tend(&repo(), &["validate", &relative, "--max-steps", "100000"]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(
            stderr.contains(".star:"),
            "{name} has no file:line:col: {stderr}"
        );
        assert!(stderr.contains('^'), "{name} has no caret: {stderr}");
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
        assert!(text(&output.stdout).is_empty(), "{name} printed to stdout");
        settings.bind(|| insta::assert_snapshot!(name, stderr));
    }
}

#[test]
fn every_bad_nickel_spec_is_reported_with_its_location() {
    let dir = repo().join("testdata/errors");
    let cases = files_with_extension(&dir, "ncl");
    assert!(cases.len() >= 10, "only {} Nickel error cases", cases.len());
    let settings = snapshots_in(&dir.join("snapshots"));
    for case in cases {
        let name = case
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let relative = format!("testdata/errors/{name}.ncl");
        let output = tend(&repo(), &["validate", &relative]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        // The place is in the user's spec, never in the contract shipped inside tend.
        assert!(
            stderr.contains(&format!("--> {relative}:")),
            "{name} does not point into its spec: {stderr}"
        );
        assert!(stderr.contains('^'), "{name} has no caret: {stderr}");
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
        assert!(text(&output.stdout).is_empty(), "{name} printed to stdout");
        settings.bind(|| insta::assert_snapshot!(name, stderr));
    }
}

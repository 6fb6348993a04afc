//! Every bad spec under `testdata/errors/`, Starlark and Nickel, fails `tend validate` with
//! exit status 1 and a message with file:line:col in that spec and a caret, snapshotted
//! beside it.

use crate::harness::{files_with_extension, repo, snapshots_in, tend, text};

/// Checks every `testdata/errors/*.{ext}` (at least `fewest` of them).
fn every_case(ext: &str, fewest: usize) {
    let dir = repo().join("testdata/errors");
    let cases = files_with_extension(&dir, ext);
    assert!(
        cases.len() >= fewest,
        "only {} .{ext} error cases",
        cases.len()
    );
    let settings = snapshots_in(&dir.join("snapshots"));
    for case in cases {
        let name = case
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let relative = format!("testdata/errors/{name}.{ext}");
        let output = tend(&repo(), &["validate", &relative, "--max-steps", "100000"]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        // The place is in the case's own spec (or a file it loads), never in tend's
        // shipped Nickel contract.
        assert!(
            stderr.contains(&format!(".{ext}:")) && !stderr.contains("@tend//tend.ncl"),
            "{name} has no file:line:col of its own: {stderr}"
        );
        assert!(stderr.contains('^'), "{name} has no caret: {stderr}");
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
        assert!(!stderr.contains("internal error"), "{name}: {stderr}");
        assert!(text(&output.stdout).is_empty(), "{name} printed to stdout");
        settings.bind(|| insta::assert_snapshot!(name, stderr));
    }
}

#[test]
fn every_bad_spec_is_reported_with_its_location() {
    every_case("star", 15);
}

#[test]
fn every_bad_nickel_spec_is_reported_with_its_location() {
    every_case("ncl", 10);
}

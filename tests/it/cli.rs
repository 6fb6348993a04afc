//! The CLI as a user runs it: default spec path, exit codes, JSON shape, saved plans, graphs.

use std::path::Path;

use crate::harness::{repo, snapshots_in, tend, text};

const SPEC: &str = r#"
db = group(name = "db", ids = ["a", "b"], provider = sim(), flavor = flavor(command = ["db", "{{ instance.id }}"]))
group(
    name = "web",
    size = 2,
    provider = sim(),
    flavor = flavor(command = ["web", "{{ groups.db.addresses | join(sep=',') }}"]),
    depends_on = [db],
)
"#;

fn project_with_spec() -> tempfile::TempDir {
    let dir = match tempfile::Builder::new().prefix("shop").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    if let Err(e) = std::fs::write(dir.path().join("main.star"), SPEC) {
        panic!("write spec: {e}");
    }
    dir
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(bytes)))
}

#[test]
fn plan_reads_main_star_by_default_and_orders_dependencies_first() {
    let dir = project_with_spec();
    let out = tend(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "+ create  db/a   no instance in slot");
    assert_eq!(lines[3], "+ create  web/1  no instance in slot; after db");
    assert_eq!(
        lines.last().copied(),
        Some("Plan: 4 to create, 0 to replace, 0 to heal, 0 to destroy.")
    );
}

#[test]
fn detailed_exitcode_is_two_only_when_there_are_changes() {
    let dir = project_with_spec();
    let out = tend(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let empty =
        "group(name = \"web\", size = 0, provider = sim(), flavor = flavor(command = [\"w\"]))\n";
    if let Err(e) = std::fs::write(dir.path().join("main.star"), empty) {
        panic!("{e}");
    }
    let out = tend(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("No changes: 0 instances match the spec."));
}

#[test]
fn json_plan_has_every_summary_key_and_dependency_edges() {
    let dir = project_with_spec();
    let out = tend(dir.path(), &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = json(&out.stdout);
    for key in ["create", "replace", "heal", "destroy"] {
        assert!(
            plan["summary"][key].is_u64(),
            "summary.{key} missing: {plan}"
        );
    }
    assert_eq!(plan["summary"]["create"], 4);
    let actions = plan["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(actions.len(), 4);
    for action in &actions {
        for key in ["action", "group", "slot", "reason", "after"] {
            assert!(!action[key].is_null(), "action without {key}: {action}");
        }
    }
    // web's creates wait for both db creates, through one barrier: db's builds.
    assert_eq!(
        plan["barriers"],
        serde_json::json!([{"group": "db", "kind": "builds", "actions": [0, 1]}])
    );
    assert_eq!(actions[2]["group"], "web");
    assert_eq!(actions[2]["after"], serde_json::json!([]));
    assert_eq!(actions[2]["after_barriers"], serde_json::json!([0]));
    assert_eq!(actions[0]["after"], serde_json::json!([]));
    assert!(actions[0].get("after_barriers").is_none(), "{}", actions[0]);
}

#[test]
fn saved_plan_is_bound_to_spec_and_observed_state() {
    let dir = project_with_spec();
    let out = tend(dir.path(), &["plan", "-o", "web.plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Saved the plan to web.plan."));
    let saved = json(&std::fs::read(dir.path().join("web.plan")).unwrap_or_default());
    assert_eq!(saved["format"], 2);
    assert_eq!(saved["spec_path"], "main.star");
    assert_eq!(saved["spec_fingerprint"].as_str().map(str::len), Some(64));
    assert_eq!(
        saved["observed_fingerprint"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(saved["plan"]["summary"]["create"], 4);
    assert!(!dir.path().join("web.plan.tmp").exists());

    // A different spec gives a different fingerprint.
    let changed = SPEC.replace("size = 2", "size = 3");
    if let Err(e) = std::fs::write(dir.path().join("main.star"), changed) {
        panic!("{e}");
    }
    let out = tend(dir.path(), &["plan", "-o", "web2.plan", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let again = json(&std::fs::read(dir.path().join("web2.plan")).unwrap_or_default());
    assert_ne!(again["spec_fingerprint"], saved["spec_fingerprint"]);
    assert_eq!(again["observed_fingerprint"], saved["observed_fingerprint"]);
}

#[test]
fn a_plan_saved_in_an_older_format_is_refused_with_what_to_do() {
    let dir = project_with_spec();
    let out = tend(dir.path(), &["plan", "-o", "web.plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // As tend 0.1 wrote it: format 1, every wait listed in `after`.
    let mut saved = json(&std::fs::read(dir.path().join("web.plan")).unwrap_or_default());
    saved["format"] = serde_json::json!(1);
    saved["tend_version"] = serde_json::json!("0.1.0");
    if let Err(e) = std::fs::write(dir.path().join("web.plan"), saved.to_string()) {
        panic!("{e}");
    }
    let out = tend(dir.path(), &["apply", "web.plan", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: usage error: web.plan was saved by tend 0.1.0 in plan format 1, and this tend \
         reads format 2 only: run `tend plan -o web.plan` again\n\
         help: do as the error says; `tend apply --help` shows what the command takes, with examples"
    );
}

#[test]
fn graph_prints_dot_and_mermaid_with_implicit_edges() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spec = r#"
db = group(name = "db", size = 1, provider = sim(), flavor = flavor(command = ["db"]))
group(name = "api", size = 1, provider = sim(), flavor = flavor(command = ["api", "{{ groups.db.addresses | first }}"]))
group(name = "web-ui", size = 1, provider = sim(), flavor = flavor(command = ["web"]), depends_on = ["api"])
"#;
    std::fs::write(dir.path().join("spec.star"), spec).unwrap_or_else(|e| panic!("{e}"));
    let dot = tend(dir.path(), &["graph", "spec.star"]);
    assert_eq!(dot.status.code(), Some(0), "{}", text(&dot.stderr));
    let mermaid = tend(dir.path(), &["graph", "spec.star", "--format", "mermaid"]);
    snapshots_in(&repo().join("testdata/graph")).bind(|| {
        insta::assert_snapshot!("graph_dot", text(&dot.stdout));
        insta::assert_snapshot!("graph_mermaid", text(&mermaid.stdout));
    });
}

#[test]
fn validate_says_what_it_checked() {
    let dir = project_with_spec();
    let out = tend(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = dir
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let project: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    assert_eq!(
        text(&out.stdout).trim(),
        format!("main.star is valid: project {project:?}, 2 groups, 4 instances; order: db, web")
    );
}

#[test]
fn a_missing_spec_is_a_spec_error_with_exit_one() {
    let out = tend(Path::new("/"), &["plan", "/nonexistent/main.star"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: spec error: cannot read spec /nonexistent/main.star: No such file or directory (os error 2)\n\
         help: change the spec as the error says, then check it with `tend validate`"
    );
}

#[test]
fn status_watch_writes_a_status_per_look_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let dir = project_with_spec();
    let out = tend(dir.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut watch = crate::harness::spawn_tend(
        dir.path(),
        &["status", "--watch=100ms", "--json"],
        std::process::Stdio::piped,
    );
    let stdout = watch.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    // Not a terminal: one compact JSON status per look, each of the whole project.
    for _ in 0..3 {
        let line = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("tend status --watch ended early"));
        let status = json(line.as_bytes());
        assert_eq!(status["groups"][1]["counts"]["healthy"], 2, "{line}");
    }
    crate::harness::signal(watch.id(), "-INT");
    let ended = watch.wait().map(|s| s.code());
    assert_eq!(ended.ok().flatten(), Some(0));

    // The spec path is not taken for the interval: `--watch` takes one only after `=`.
    let out = tend(dir.path(), &["status", "--watch", "nope.star"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope.star"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_watch_ends_when_its_reader_is_gone() {
    use std::io::{BufRead, BufReader};
    let dir = project_with_spec();
    let out = tend(dir.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut watch = crate::harness::spawn_tend(
        dir.path(),
        &["status", "--watch=100ms", "--json"],
        std::process::Stdio::piped,
    );
    let stdout = watch.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut first = String::new();
    let _ = BufReader::new(stdout).read_line(&mut first);
    assert!(first.starts_with('{'), "{first}");
    // The reader hung up: the next look's write fails, and the watch exits 0 by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ended = loop {
        if let Ok(Some(status)) = watch.try_wait() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = watch.kill();
            panic!("tend status --watch kept running with no reader");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(ended, Some(0));
}

#[test]
fn a_saved_plan_is_never_taken_for_a_spec_so_nothing_is_destroyed() {
    let dir = project_with_spec();
    let out = tend(dir.path(), &["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = tend(dir.path(), &["plan", "-o", "web.plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // As a newer tend might write it: a format this tend cannot read, no version.
    let mut saved = json(&std::fs::read(dir.path().join("web.plan")).unwrap_or_default());
    saved["format"] = serde_json::json!({"major": 3});
    if let Some(fields) = saved.as_object_mut() {
        fields.remove("tend_version");
    }
    if let Err(e) = std::fs::write(dir.path().join("newer.plan"), saved.to_string()) {
        panic!("{e}");
    }
    let out = tend(dir.path(), &["apply", "newer.plan", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).starts_with("error: version error: newer.plan"),
        "{}",
        text(&out.stderr)
    );
    // Given where a spec goes, a plan is refused too, whatever its format.
    for args in [
        &["plan", "web.plan"][..],
        &["validate", "web.plan"],
        &["destroy", "web.plan", "--yes"],
    ] {
        let out = tend(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "tend {args:?}");
        assert!(
            text(&out.stderr).contains("web.plan is a plan saved by `tend plan -o`, not a spec"),
            "tend {args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = tend(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the instances are not all there: {}",
        text(&out.stdout)
    );
}

use std::path::Path;

use super::*;
use crate::spec::{Allocation, EnvValue, SpecHash, UpdatePolicy};

fn eval_in(dir: &Path, source: &str) -> Result<Spec, String> {
    evaluate_source("main.star", source, dir, &EvalOptions::default()).map_err(|e| e.to_string())
}

fn eval(source: &str) -> Spec {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    eval_in(dir.path(), source).unwrap_or_else(|e| panic!("{e}"))
}

fn web(extra: &str) -> String {
    format!(
        r#"project(name = "shop")
group(name = "web", provider = sim(), {extra})
"#
    )
}

fn hash(source: &str) -> String {
    SpecHash::of(&eval(source).groups[0]).to_string()
}

#[test]
fn spec_hash_ignores_allocation_policy_and_dict_order() {
    let base = hash(&web(
        r#"size = 3, flavor = flavor(command = ["srv"], env = {"A": "1", "B": "2"})"#,
    ));
    let same = [
        r#"size = 7, flavor = flavor(command = ["srv"], env = {"B": "2", "A": "1"})"#,
        r#"ids = ["x", "y"], flavor = flavor(command = ["srv"], env = {"A": "1", "B": "2"})"#,
        r#"size = 3, update = recreate(), flavor = flavor(command = ["srv"], env = {"A": "1", "B": "2"})"#,
        r#"size = 3, depends_on = [], flavor = flavor(command = ["srv"], env = dict(B = "2", A = "1"))"#,
    ];
    for extra in same {
        assert_eq!(hash(&web(extra)), base, "{extra}");
    }
    let different = [
        r#"size = 3, flavor = flavor(command = ["srv", "-v"], env = {"A": "1", "B": "2"})"#,
        r#"size = 3, flavor = flavor(command = ["srv"], env = {"A": "1", "B": "3"})"#,
        r#"size = 3, flavor = flavor(command = ["srv"], env = {"A": "1", "B": "2"}, health = tcp(port = 80))"#,
    ];
    for extra in different {
        assert_ne!(hash(&web(extra)), base, "{extra}");
    }
}

#[test]
fn spec_hash_is_the_same_on_every_machine() {
    // A pinned value: if this changes, every running instance becomes outdated on upgrade.
    let h = hash(&web(r#"size = 1, flavor = flavor(command = ["srv"])"#));
    assert_eq!(h, "98a1fe4e12fd");
}

#[test]
fn builtins_build_the_model() {
    let spec = eval(
        r#"
load("@tend//flavors.star", "http_service")
db = group(name = "db", ids = ["a", "b"], provider = sim(), flavor = flavor(command = ["db"]))
base = flavor(env = {"MODE": "prod", "TOKEN": secret("API_TOKEN")}, labels = {"team": "shop"})
api = http_service(command = ["api", "{{ instance.ports.http }}"], port = port("http"), path = "/healthz")
group(
    name = "web",
    size = 2,
    provider = sim(),
    flavor = combo(base, api, flavor(env = {"MODE": "debug"}, ports = ["metrics"])),
    depends_on = [db, "db"],
    update = rolling(max_surge = 2, min_ready = "1m30s", on_failure = "rollback"),
)
"#,
    );
    let web = &spec.groups[1];
    assert_eq!(web.allocation, Allocation::Size(2));
    assert_eq!(web.depends_on, ["db", "db"]);
    assert_eq!(web.flavor.command, ["api", "{{ instance.ports.http }}"]);
    assert_eq!(web.flavor.port_names(), ["http", "metrics"]);
    assert_eq!(web.flavor.env["MODE"], EnvValue::Plain("debug".into()));
    assert_eq!(
        web.flavor.env["TOKEN"],
        EnvValue::Secret {
            secret: "API_TOKEN".into()
        }
    );
    assert_eq!(web.flavor.labels["team"], "shop");
    let health = web
        .flavor
        .health
        .as_ref()
        .map(|h| serde_json::to_value(h).ok());
    assert_eq!(
        health.flatten(),
        Some(serde_json::json!({
            "probe": {"kind": "http", "port": {"name": "http"}, "path": "/healthz"},
            "grace_period": "5s", "interval": "2s", "timeout": "1s", "failures": 3
        }))
    );
    match &web.update {
        UpdatePolicy::Rolling(r) => {
            assert_eq!((r.max_unavailable, r.max_surge), (1, 2));
            assert_eq!(r.min_ready.as_millis(), 90_000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        spec.groups[0].allocation,
        Allocation::Ids(vec!["a".into(), "b".into()])
    );
}

#[test]
fn group_handles_and_template_reads_become_dependencies() {
    let spec = eval(
        r#"
db = group(name = "db", size = 1, provider = sim(), flavor = flavor(command = ["db"]))
if db.size != 1 or db.name != "db":
    fail("bad handle")
group(name = "web", size = 1, provider = sim(), flavor = flavor(command = ["w", "{{ groups.db.addresses | first }}"]))
"#,
    );
    assert_eq!(spec.groups[1].reads_groups, ["db"]);
    assert!(spec.groups[1].depends_on.is_empty());
}

#[test]
fn project_defaults_to_the_folder_name() {
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = parent.path().join("Web Shop");
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let spec = eval_in(&dir, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.project, "web-shop");
}

#[test]
fn loads_resolve_relative_rooted_and_stdlib_paths() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let lib = dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(lib.join("a.star"), "load(\"b.star\", \"B\")\nA = B + 1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(lib.join("b.star"), "B = 41\n").unwrap_or_else(|e| panic!("{e}"));
    let spec = eval_in(
        dir.path(),
        r#"
load("//lib/a.star", "A")
load("lib/../lib/b.star", "B")
load("@tend//policies.star", "rolling_safe")
group(name = "web", size = A - B, provider = sim(), flavor = flavor(command = ["x"]), update = rolling_safe())
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.groups[0].allocation, Allocation::Size(1));
}

#[test]
fn a_symlink_cannot_smuggle_a_load_out_of_the_root() {
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(outside.path().join("secret.star"), "X = 1\n").unwrap_or_else(|e| panic!("{e}"));
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(
        outside.path().join("secret.star"),
        root.path().join("link.star"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = eval_in(root.path(), "load(\"link.star\", \"X\")\n")
        .err()
        .unwrap_or_default();
    assert!(err.contains("resolves outside the spec root"), "{err}");
}

#[test]
fn the_step_limit_is_configurable() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = "def f():\n    for i in range(5000):\n        pass\nf()\n";
    let tight = EvalOptions {
        root: None,
        max_steps: 1000,
        ..Default::default()
    };
    let err = evaluate_source("main.star", source, dir.path(), &tight)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("more than 1000 steps") && e.contains("main.star:2:5")));
    assert!(evaluate_source("main.star", source, dir.path(), &EvalOptions::default()).is_ok());
}

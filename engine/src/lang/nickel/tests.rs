//! The Nickel front end against its Starlark twin: the same infrastructure written in both
//! gives the same model, hashes included.

use std::path::Path;

use crate::lang::{evaluate_source, EvalBudget, EvalOptions};
use crate::spec::{Spec, SpecHash};

fn eval(dir: &Path, name: &str, source: &str) -> Result<Spec, String> {
    evaluate_source(name, source, dir, &EvalOptions::default()).map_err(|e| e.to_string())
}

fn both(star: &str, ncl: &str) -> (Spec, Spec) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let a = eval(dir.path(), "main.star", star).unwrap_or_else(|e| panic!("starlark: {e}"));
    let b = eval(dir.path(), "main.ncl", ncl).unwrap_or_else(|e| panic!("nickel: {e}"));
    (a, b)
}

fn assert_twins(star: &str, ncl: &str) {
    let (a, b) = both(star, ncl);
    let json = |s: &Spec| serde_json::to_string_pretty(s).unwrap_or_default();
    assert_eq!(json(&a), json(&b));
    let hashes = |s: &Spec| {
        s.groups
            .iter()
            .map(|g| (g.name.clone(), SpecHash::of(g).to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(hashes(&a), hashes(&b));
}

#[test]
fn the_stdlib_flavors_are_the_same_in_both_languages() {
    assert_twins(
        r#"
load("@tend//flavors.star", "http_service", "tcp_service", "worker", "quorum_member", "peers")
project(name = "twins")
group(name = "a", size = 2, provider = process(), flavor = http_service(command = ["srv"], port = 8080, path = "/up", env = {"K": "v"}, grace_period = "3s"))
group(name = "b", size = 1, provider = process(), flavor = http_service(command = ["api", "{{ instance.ports.http }}"], expose = 8400))
group(name = "c", size = 1, provider = sim(), flavor = tcp_service(command = ["db"], port = "{{ 5432 + instance.index }}"))
group(name = "d", size = 1, provider = sim(), flavor = worker(command = ["loop"], env = {"T": secret("TOKEN")}))
group(name = "e", ids = ["x", "y", "z"], provider = sim(), flavor = quorum_member(command = ["member", "{{ instance.id }}", "--peers", peers(9000, step = 2)], port = 8000, step = 2))
"#,
        r#"
let tend = import "tend.ncl" in
let f = tend.flavors in
{
  project = "twins",
  groups = {
    a = { size = 2, provider = { process = {} }, flavor = f.http_service { command = ["srv"], port = 8080, path = "/up", env = { K = "v" }, grace_period = "3s" } },
    b = { size = 1, provider = { process = {} }, flavor = f.http_service { command = ["api", "{{ instance.ports.http }}"], expose = 8400 } },
    c = { size = 1, provider = { sim = {} }, flavor = f.tcp_service { command = ["db"], port = "{{ 5432 + instance.index }}" } },
    d = { size = 1, provider = { sim = {} }, flavor = f.worker { command = ["loop"], env = { T = tend.secret "TOKEN" } } },
    e = { ids = ["x", "y", "z"], provider = { sim = {} }, flavor = f.quorum_member { command = ["member", "{{ instance.id }}", "--peers", f.peers { port = 9000, step = 2 }], port = 8000, step = 2 } },
  },
}
"#,
    );
}

#[test]
fn the_stdlib_services_are_the_same_in_both_languages() {
    assert_twins(
        r#"
load("@tend//services.star", "etcd_member", "redis_server", "static_site")
project(name = "twins")
group(name = "etcd", ids = ["a", "b", "c"], provider = sim(), flavor = etcd_member(client_port = 22379, step = 5))
group(name = "redis", size = 2, provider = sim(), flavor = redis_server(port = 16379))
group(name = "site", size = 1, provider = sim(), flavor = static_site(8080, files = {"index.html": "hi"}))
group(name = "box", size = 2, provider = sim(), flavor = static_site("{{ 9000 + instance.index }}", server = "busybox"))
"#,
        r#"
let s = (import "tend.ncl").services in
{
  project = "twins",
  groups = {
    etcd = { ids = ["a", "b", "c"], provider = { sim = {} }, flavor = s.etcd_member { client_port = 22379, step = 5 } },
    redis = { size = 2, provider = { sim = {} }, flavor = s.redis_server { port = 16379 } },
    site = { size = 1, provider = { sim = {} }, flavor = s.static_site { port = 8080, files = { "index.html" = "hi" } } },
    box = { size = 2, provider = { sim = {} }, flavor = s.static_site { port = "{{ 9000 + instance.index }}", server = "busybox" } },
  },
}
"#,
    );
}

#[test]
fn the_stdlib_health_checks_and_policies_are_the_same_in_both_languages() {
    assert_twins(
        r#"
load("@tend//health.star", "http_ok", "tcp_open", "command_ok")
load("@tend//policies.star", "rolling_safe", "rolling_fast", "canary")
project(name = "twins")
group(name = "a", size = 1, provider = sim(), flavor = flavor(command = ["a"], ports = ["http"], health = http_ok("http", every = "1s")), update = rolling_safe())
group(name = "b", size = 1, provider = sim(), flavor = flavor(command = ["b"], ports = ["admin"], health = tcp_open("admin", grace = "1s")), update = rolling_fast())
group(name = "c", size = 1, provider = sim(), flavor = flavor(command = ["c"], health = command_ok(["true"], timeout = "3s")), update = canary(2, min_ready = "10s"))
group(name = "d", size = 1, provider = sim(), flavor = flavor(command = ["d"]), update = recreate())
"#,
        r#"
let tend = import "tend.ncl" in
let h = tend.health in
let p = tend.policies in
{
  project = "twins",
  groups = {
    a = { size = 1, provider = { sim = {} }, flavor = { command = ["a"], ports = ["http"], health = h.http_ok { port = "http", every = "1s" } }, update = p.rolling_safe {} },
    b = { size = 1, provider = { sim = {} }, flavor = { command = ["b"], ports = ["admin"], health = h.tcp_open { port = "admin", grace = "1s" } }, update = p.rolling_fast {} },
    c = { size = 1, provider = { sim = {} }, flavor = { command = ["c"], health = h.command_ok { command = ["true"], timeout = "3s" } }, update = p.canary { n = 2, min_ready = "10s" } },
    d = { size = 1, provider = { sim = {} }, flavor = { command = ["d"] }, update = { recreate = {} } },
  },
}
"#,
    );
}

#[test]
fn combo_merges_as_in_starlark() {
    assert_twins(
        r#"
project(name = "twins")
base = flavor(command = ["srv"], env = {"A": "1", "B": "2"}, labels = {"tier": "web"}, ports = ["http"], drain_timeout = "20s", health = tcp(port = "http"))
extra = flavor(env = {"B": "3"}, files = {"x.txt": "x"}, ports = ["http", "admin"], workdir = "/tmp")
group(name = "web", size = 2, provider = sim(), flavor = combo(base, extra))
group(name = "api", size = 1, provider = sim(), flavor = combo(extra, base))
"#,
        r#"
let tend = import "tend.ncl" in
let base = { command = ["srv"], env = { A = "1", B = "2" }, labels = { tier = "web" }, ports = ["http"], drain_timeout = "20s", health = { tcp = { port = "http" } } } in
let extra = { env = { B = "3" }, files = { "x.txt" = "x" }, ports = ["http", "admin"], workdir = "/tmp" } in
{
  project = "twins",
  groups = {
    web = { size = 2, provider = { sim = {} }, flavor = tend.combo [base, extra] },
    api = { size = 1, provider = { sim = {} }, flavor = tend.combo [extra, base] },
  },
}
"#,
    );
}

#[test]
fn every_provider_gives_the_same_settings() {
    assert_twins(
        r#"
project(name = "twins", ports = "21000-21999")
group(name = "a", size = 1, provider = process(cgroups = False, machine = "m1"), flavor = flavor(command = ["a"], resources = resources(memory = "64M", cpu = 0.5, pids = 20)))
group(name = "b", size = 1, provider = docker("busybox", ports = {8080: "{{ 18000 + instance.index }}", "9090": 0}, network = "n", pull = True), flavor = flavor(command = ["b"], secret_files = {"token": secret("TOKEN")}))
group(name = "c", size = 1, provider = sim(visible_after = "1s", ready_after = "2s"), flavor = flavor(command = ["c"]))
group(name = "d", size = 1, provider = terraform(), flavor = flavor(command = ["d"]))
group(name = "e", size = 1, provider = vagrant(image = "busybox", ports = {80: 18080}), flavor = flavor(command = ["e"]))
group(name = "f", size = 1, provider = plugin(command = ["python3", "plugins/files.py"], config = {"root": "/tmp/x"}), flavor = flavor(command = ["f"], ports = ["http"]), expose = balancer(port = 8500, target = "http", strategy = "least_connections"))
"#,
        r#"
let tend = import "tend.ncl" in
{
  project = "twins",
  ports = "21000-21999",
  groups = {
    a = { size = 1, provider = { process = { cgroups = false, machine = "m1" } }, flavor = { command = ["a"], resources = { memory = "64M", cpu = 0.5, pids = 20 } } },
    b = { size = 1, provider = { docker = { image = "busybox", ports = { "8080" = "{{ 18000 + instance.index }}", "9090" = 0 }, network = "n", pull = true } }, flavor = { command = ["b"], secret_files = { token = tend.secret "TOKEN" } } },
    c = { size = 1, provider = { sim = { visible_after = "1s", ready_after = "2s" } }, flavor = { command = ["c"] } },
    d = { size = 1, provider = { terraform = {} }, flavor = { command = ["d"] } },
    e = { size = 1, provider = { vagrant = { image = "busybox", ports = { "80" = 18080 } } }, flavor = { command = ["e"] } },
    f = { size = 1, provider = { plugin = { command = ["python3", "plugins/files.py"], config = { root = "/tmp/x" } } }, flavor = { command = ["f"], ports = ["http"] }, expose = { port = 8500, target = "http", strategy = "least_connections" } },
  },
}
"#,
    );
}

#[test]
fn groups_keep_the_order_they_are_written_in() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spec = eval(
        dir.path(),
        "main.ncl",
        r#"{ groups = {
  zeta = { size = 1, provider = { sim = {} }, flavor = { command = ["z"] } },
  alpha = { size = 1, provider = { sim = {} }, flavor = { command = ["a"] } },
  mid = { size = 1, provider = { sim = {} }, flavor = { command = ["m"] } },
} }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    // Made from a list, as a Starlark loop would make them.
    let spec = eval(
        dir.path(),
        "main.ncl",
        r#"let make = fun name => { field = name, value = { size = 1, provider = { sim = {} }, flavor = { command = [name] } } } in
{ groups = std.record.from_array (std.array.map make ["web", "api", "db"]) }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "api", "db"]);
}

#[test]
fn deeply_nested_values_are_read_without_overflowing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let depth = 400;
    let config = format!("{}1{}", "{ a = ".repeat(depth), " }".repeat(depth));
    let source = format!(
        r#"{{ groups.p = {{ size = 1, provider = {{ plugin = {{ command = ["python3", "p.py"], config = {{ deep = {config} }} }} }}, flavor = {{ command = ["x"] }} }} }}"#
    );
    let spec = eval(dir.path(), "main.ncl", &source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.groups[0].provider.kind, "p");
}

#[test]
fn imports_stay_inside_the_root() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path().join("spec");
    std::fs::create_dir_all(root.join("lib")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        root.join("lib/flavors.ncl"),
        r#"{ sleeper = { command = ["sleep", "60"] } }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("outside.ncl"), r#"{ command = ["x"] }"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let inside = eval(
        &root,
        "main.ncl",
        r#"let lib = import "lib/flavors.ncl" in { groups.w = { size = 1, provider = { sim = {} }, flavor = lib.sleeper } }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inside.groups[0].flavor.command, ["sleep", "60"]);
    assert_eq!(
        inside.project, "spec",
        "the default project is the folder's name"
    );
    let outside = eval(
        &root,
        "main.ncl",
        r#"{ groups.w = { size = 1, provider = { sim = {} }, flavor = import "../outside.ncl" } }"#,
    );
    let message = outside.err().unwrap_or_default();
    assert!(
        message.contains("import of ../outside.ncl leads outside the spec's folder"),
        "{message}"
    );
    // A link inside the folder to a file outside it is refused too, and the file is never
    // read: its text would otherwise be the error.
    std::fs::write(dir.path().join("secret.txt"), "{ leaked = true }")
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("lib/linked.ncl"))
        .unwrap_or_else(|e| panic!("{e}"));
    let linked = eval(
        &root,
        "main.ncl",
        r#"{ project = std.fail_with (import "lib/linked.ncl" as 'Text) }"#,
    );
    let message = linked.err().unwrap_or_default();
    assert!(
        message.contains("import of lib/linked.ncl leads outside the spec's folder"),
        "{message}"
    );
    assert!(!message.contains("leaked"), "{message}");
}

#[test]
fn a_runaway_spec_is_abandoned_with_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = EvalOptions {
        budget: EvalBudget {
            time: std::time::Duration::from_secs(1),
            memory_bytes: 1 << 30,
        },
        ..Default::default()
    };
    let forever = "let rec f = fun x => f (x + 1) in { groups = f 0 }";
    let message = evaluate_source("main.ncl", forever, dir.path(), &options)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("main.ncl ran for 1s without finishing its evaluation"),
        "{message}"
    );
}

#[test]
fn groups_from_a_json_file_get_the_contract_and_its_defaults() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("groups.json"),
        r#"{"web": {"size": 2, "provider": {"sim": {}}, "flavor": {"command": ["srv"], "health": {"tcp": {"port": 8080}}}}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (star, ncl) = (
        r#"project(name = "j")
group(name = "web", size = 2, provider = sim(), flavor = flavor(command = ["srv"], health = tcp(port = 8080)))
"#,
        r#"{ project = "j", groups = import "groups.json" }"#,
    );
    let a = eval(dir.path(), "main.star", star).unwrap_or_else(|e| panic!("{e}"));
    let b = eval(dir.path(), "main.ncl", ncl).unwrap_or_else(|e| panic!("{e}"));
    let json = |s: &Spec| serde_json::to_string(s).unwrap_or_default();
    assert_eq!(json(&a), json(&b));
}

#[test]
fn a_tend_ncl_beside_the_spec_is_imported_but_the_shipped_contract_still_checks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("tend.ncl"),
        r#"{ mine = ["from", "beside"] }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let spec = eval(
        dir.path(),
        "main.ncl",
        r#"let t = import "tend.ncl" in { groups.w = { size = 1, provider = { sim = {} }, flavor = { command = t.mine } } }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.groups[0].flavor.command, ["from", "beside"]);
    let refused = eval(
        dir.path(),
        "main.ncl",
        r#"{ groups.w = { size = "one", provider = { sim = {} }, flavor = { command = ["x"] } } }"#,
    );
    let message = refused.err().unwrap_or_default();
    assert!(message.contains("expected type `Number`"), "{message}");
}

//! Versioned formats (`engine::format`): what tend 0.1.0 wrote (the fixtures in
//! `testdata/formats/tend-0.1.0/`) is read, migrated and planned as "no changes"; what a
//! newer tend wrote is refused, exit status 1, with nothing on disk or in etcd changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::Cluster;
use crate::harness::{repo, snapshots_in, spawn_tend, tend, text};

/// `testdata/formats/tend-0.1.0/<name>`.
fn fixture(name: &str) -> PathBuf {
    repo().join("testdata/formats/tend-0.1.0").join(name)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// A project folder holding the fixture's `main.star` (from `spec`) and its `.tend/` (from
/// `state`'s `dot-tend/`).
fn project(spec: &str, state: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        fixture(spec).join("main.star"),
        dir.path().join("main.star"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    copy_tree(&fixture(state).join("dot-tend"), &dir.path().join(".tend"));
    dir
}

/// Every file under `dir`, with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            all.extend(contents(&entry.path()));
        } else {
            all.insert(
                entry.path(),
                std::fs::read(entry.path()).unwrap_or_default(),
            );
        }
    }
    all
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The error tend printed, with its help line, this tend's version as `<version>`.
fn error_of(out: &Output) -> String {
    text(&out.stderr)
        .trim_end()
        .replace(env!("TEND_VERSION"), "<version>")
}

/// Runs tend, which must end on its own within a minute (`tend run` keeps going when it
/// does not refuse).
fn tend_ends(dir: &Path, args: &[&str]) -> Output {
    let mut child = spawn_tend(dir, args, Stdio::piped);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tend {args:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("tend {args:?}: {e}"))
}

fn assert_exit(out: &Output, code: i32, args: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "tend {args:?}:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The sim world's journal with instance `id` put again, its tags of format `format`.
fn sim_world_with_format(world: &Path, id: &str, format: u32) {
    let journal = read(world);
    let mut put = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|l| l["put"]["instance"]["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {}", world.display()));
    put["put"]["instance"]["tags"]["format"] = format.into();
    write(world, &format!("{journal}{put}\n"));
}

/// The commands that read a project: each must refuse a newer format and change nothing.
const EVERY_COMMAND: [&[&str]; 5] = [
    &["plan"],
    &["apply", "--yes"],
    &["destroy", "--yes"],
    &["status"],
    &["run"],
];

#[test]
fn a_local_store_of_tend_0_1_0_plans_no_changes_and_its_next_apply_migrates_it() {
    let dir = project("local", "local");
    let state = dir.path().join(".tend");
    let before = contents(&state);
    let out = tend(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_exit(&out, 0, &["plan"]);
    assert!(
        text(&out.stdout).starts_with("No changes: 4 instances match the spec."),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(before, contents(&state), "a plan migrates nothing");

    let out = tend(dir.path(), &["apply", "--yes"]);
    assert_exit(&out, 0, &["apply", "--yes"]);
    assert!(
        text(&out.stdout).starts_with("No changes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(read(&state.join("format")), "2\n");
    let applied: serde_json::Value =
        serde_json::from_str(&read(&state.join("state.json"))).unwrap_or_default();
    assert_eq!(applied["lineage"], "e7fce16e67cd4e05");
    assert_eq!(applied["serial"], 2);
    assert_eq!(
        read(&state.join("sim/world.jsonl")),
        read(&fixture("local/dot-tend/sim/world.jsonl")),
        "the instances of tend 0.1.0 are kept as they are"
    );

    let out = tend(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_exit(&out, 0, &["plan"]);
    assert!(text(&out.stdout).starts_with("No changes: 4 instances match the spec."));
}

#[test]
fn a_plan_saved_by_tend_0_1_0_is_applied_and_what_it_makes_carries_the_format_tag() {
    let dir = project("plan", "local");
    std::fs::copy(fixture("plan/plan.json"), dir.path().join("plan.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = tend(dir.path(), &["apply", "plan.json", "--yes"]);
    assert_exit(&out, 0, &["apply", "plan.json"]);
    assert!(
        text(&out.stdout).contains("created   web/2"),
        "{}",
        text(&out.stdout)
    );
    let state = dir.path().join(".tend");
    assert_eq!(read(&state.join("format")), "2\n");
    // The new instance carries `tend.format`; the four of tend 0.1.0 stay as they were.
    let world = read(&state.join("sim/world.jsonl"));
    let puts: Vec<serde_json::Value> = world
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["put"].is_object())
        .collect();
    let formats: Vec<(String, serde_json::Value)> = puts
        .iter()
        .map(|p| {
            let tags = &p["put"]["instance"]["tags"];
            (
                format!(
                    "{}/{}",
                    tags["group"].as_str().unwrap_or(""),
                    tags["slot"].as_str().unwrap_or("")
                ),
                tags["format"].clone(),
            )
        })
        .collect();
    assert_eq!(formats.len(), 5, "{world}");
    assert_eq!(
        formats.last(),
        Some(&("web/2".to_owned(), serde_json::json!(2))),
        "{world}"
    );
    assert!(formats[..4].iter().all(|(_, f)| f.is_null()), "{world}");
    let out = tend(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_exit(&out, 0, &["plan"]);
    assert!(text(&out.stdout).starts_with("No changes: 5 instances match the spec."));
}

#[test]
fn an_older_saved_plan_is_made_again_and_a_newer_one_needs_a_newer_tend() {
    let settings = snapshots_in(&repo().join("testdata/formats/snapshots"));
    let dir = project("plan", "local");
    let saved: serde_json::Value =
        serde_json::from_str(&read(&fixture("plan/plan.json"))).unwrap_or_default();
    for (format, name) in [(1, "older_saved_plan"), (3, "newer_saved_plan")] {
        let mut plan = saved.clone();
        plan["format"] = format.into();
        if format == 3 {
            plan["tend_version"] = "9.0.0".into();
        }
        write(&dir.path().join("plan.json"), &plan.to_string());
        let before = contents(dir.path());
        let out = tend(dir.path(), &["apply", "plan.json", "--yes"]);
        assert_exit(&out, 1, &["apply", "plan.json"]);
        assert_eq!(before, contents(dir.path()), "{name}");
        settings.bind(|| insta::assert_snapshot!(name, error_of(&out)));
    }
}

#[test]
fn a_local_store_of_a_newer_format_is_refused_before_anything_is_read_or_written() {
    let settings = snapshots_in(&repo().join("testdata/formats/snapshots"));
    let dir = project("local", "local");
    let state = dir.path().join(".tend");
    write(&state.join("format"), "3\n");
    std::fs::remove_file(state.join("lock")).unwrap_or_else(|e| panic!("{e}"));
    // Without the refusal, the spec's new group would be made and the old one removed.
    let spec = read(&dir.path().join("main.star")).replace("name = \"web\"", "name = \"www\"");
    write(&dir.path().join("main.star"), &spec);
    let before = contents(dir.path());
    for args in EVERY_COMMAND {
        let out = tend_ends(dir.path(), args);
        assert_exit(&out, 1, args);
        let error = error_of(&out);
        assert!(
            error.contains("the state in .tend was written by a newer tend (state format 3; this tend reads up to 2)"),
            "tend {args:?}: {error}"
        );
        assert_eq!(
            before,
            contents(dir.path()),
            "tend {args:?} changed the folder"
        );
        if args == ["plan"] {
            settings.bind(|| insta::assert_snapshot!("newer_local_state", error));
        }
    }
}

#[test]
fn an_instance_of_a_newer_format_is_never_replaced_destroyed_or_orphaned() {
    let settings = snapshots_in(&repo().join("testdata/formats/snapshots"));
    let dir = project("local", "local");
    let world = dir.path().join(".tend/sim/world.jsonl");
    // web/0, made by a newer tend.
    sim_world_with_format(&world, "sim-000003", 3);
    let before = read(&world);
    let spec = read(&dir.path().join("main.star"));
    for (what, spec) in [
        ("as it is", spec.clone()),
        // A new version of web (replace), and web removed (destroy, or orphans).
        ("changed", spec.replace("\"web\", \"{{", "\"web2\", \"{{")),
        (
            "without web",
            spec[..spec
                .find("group(\n    name = \"web\"")
                .unwrap_or(spec.len())]
                .to_owned(),
        ),
    ] {
        write(&dir.path().join("main.star"), &spec);
        for args in EVERY_COMMAND {
            let out = tend_ends(dir.path(), args);
            assert_exit(&out, 1, args);
            let error = error_of(&out);
            assert!(
                error.contains("instance sim-000003 (web/0 of project \"formats\", in the sim provider) was made by a newer tend (instance format 3; this tend reads up to 2)"),
                "{what}, tend {args:?}: {error}"
            );
            assert_eq!(
                before,
                read(&world),
                "{what}, tend {args:?} changed the instances"
            );
            assert!(!dir.path().join(".tend/format").exists());
            if what == "as it is" && args == ["plan"] {
                settings.bind(|| insta::assert_snapshot!("newer_instance", error));
            }
        }
    }
}

#[test]
fn a_process_record_of_tend_0_1_0_is_read_and_one_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(fixture("process/main.star"), dir.path().join("main.star"))
        .unwrap_or_else(|e| panic!("{e}"));
    let records = dir.path().join(".tend/process/instances.jsonl");
    std::fs::create_dir_all(dir.path().join(".tend/process")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(fixture("process/instances.jsonl"), &records).unwrap_or_else(|e| panic!("{e}"));
    // Its process is long gone: a dead instance, healed in its slot, not a stranger.
    let out = tend(dir.path(), &["plan"]);
    assert_exit(&out, 0, &["plan"]);
    let plan = text(&out.stdout);
    assert!(plan.contains("heal") && plan.contains("worker/0"), "{plan}");
    assert!(plan.contains("0 to create"), "{plan}");

    let newer = read(&records).replace(
        "\"hash\":\"d32a668874a7\"",
        "\"hash\":\"d32a668874a7\",\"format\":3",
    );
    write(&records, &newer);
    let out = tend(dir.path(), &["apply", "--yes"]);
    assert_exit(&out, 1, &["apply"]);
    let error = error_of(&out);
    assert!(
        error.contains("instance 31017-2480798 (worker/0 of project \"formats\", in the process provider) was made by a newer tend (instance format 3; this tend reads up to 2)"),
        "{error}"
    );
    assert_eq!(read(&records), newer);
}

/// A session leader that only the test started, tagged as an instance of `project` made by
/// a newer tend; killed by its pid when dropped.
struct Stranger(std::process::Child);

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn environ(pid: u32) -> BTreeMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|e| {
            let (k, v) = std::str::from_utf8(e).ok()?.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn a_process_carries_its_format_and_one_a_newer_tend_made_is_never_stopped() {
    let name = format!("formats-{}", std::process::id());
    let project = crate::process::Project::new(
        &name,
        "group(name = \"work\", size = 1, provider = process(), flavor = flavor(command = [\"sleep\", \"600\"]))\n",
    );
    project.ok(&["apply", "--yes"]);
    let live = project.live();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        environ(live[0].pid).get("TEND_FORMAT").map(String::as_str),
        Some("2")
    );
    let records = read(&project.path().join(".tend/process/instances.jsonl"));
    assert!(records.contains("\"format\":2"), "{records}");

    // A second instance in slot 1, as a newer tend would have made it: beyond the size, so
    // without the refusal a destroy (or an apply) would stop it.
    let stranger = Command::new("setsid")
        .args(["sleep", "600"])
        .env("TEND_PROJECT", &name)
        .env("TEND_GROUP", "work")
        .env("TEND_SLOT", "1")
        .env("TEND_HASH", &live[0].hash)
        .env("TEND_FORMAT", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Stranger)
        .unwrap_or_else(|e| panic!("setsid: {e}"));
    let pid = stranger.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !project.live().iter().any(|l| l.pid == pid) {
        assert!(Instant::now() < deadline, "the stranger never showed");
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [&["destroy", "--yes"][..], &["apply", "--yes"]] {
        let out = project.tend(args);
        assert_exit(&out, 1, args);
        let error = error_of(&out);
        assert!(
            error.contains(&format!("(work/1 of project \"{name}\", in the process provider) was made by a newer tend (instance format 3; this tend reads up to 2)")),
            "{error}"
        );
        assert_eq!(project.live().len(), 2, "tend {args:?} stopped an instance");
    }
    drop(stranger);
    let deadline = Instant::now() + Duration::from_secs(10);
    while project.live().iter().any(|l| l.pid == pid) {
        assert!(Instant::now() < deadline, "the stranger did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every key under `/tend/` with its value and revisions, as etcdctl prints them.
fn etcd_keys(cluster: &Cluster) -> Vec<serde_json::Value> {
    let out = cluster.ctl(&["get", "--prefix", "/tend/", "-w", "json"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    value["kvs"].as_array().cloned().unwrap_or_default()
}

/// A fresh cluster holding the keys tend 0.1.0 wrote, and a project folder with the spec
/// and the sim instances of that apply.
fn etcd_of_tend_0_1_0(test: &str) -> Option<(Cluster, tempfile::TempDir)> {
    let cluster = Cluster::start(test)?;
    let dump: Vec<serde_json::Value> =
        serde_json::from_str(&read(&fixture("etcd/keys.json"))).unwrap_or_default();
    assert_eq!(dump.len(), 4);
    for kv in &dump {
        let (Some(key), Some(value)) = (kv["key"].as_str(), kv["value"].as_str()) else {
            panic!("not a key and value: {kv}");
        };
        cluster.ctl(&["put", key, value]);
    }
    assert_eq!(etcd_keys(&cluster).len(), 4, "the fixture did not load");
    Some((cluster, project("etcd", "etcd")))
}

#[test]
fn an_etcd_store_of_tend_0_1_0_plans_no_changes_and_its_next_apply_migrates_it() {
    let test =
        "formats::an_etcd_store_of_tend_0_1_0_plans_no_changes_and_its_next_apply_migrates_it";
    let Some((cluster, dir)) = etcd_of_tend_0_1_0(test) else {
        return;
    };
    let url = cluster.url();
    let before = etcd_keys(&cluster);
    let plan = ["plan", "--detailed-exitcode", "--store", &url];
    let out = tend(dir.path(), &plan);
    assert_exit(&out, 0, &plan);
    assert!(
        text(&out.stdout).starts_with("No changes: 4 instances match the spec."),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(before, etcd_keys(&cluster), "a plan migrates nothing");

    let apply = ["apply", "--yes", "--store", &url];
    let out = tend(dir.path(), &apply);
    assert_exit(&out, 0, &apply);
    assert_eq!(
        cluster.ctl(&["get", "--print-value-only", "/tend/v1/formats/format"]),
        "2\n\n"
    );
    let sources: serde_json::Value = serde_json::from_str(
        cluster
            .ctl(&["get", "--print-value-only", "/tend/v1/formats/sources"])
            .trim(),
    )
    .unwrap_or_default();
    assert_eq!(sources["lineage"], "5c3d032204a1c213");
    assert_eq!(sources["history"], 2);
    let out = tend(dir.path(), &plan);
    assert_exit(&out, 0, &plan);
    assert!(text(&out.stdout).starts_with("No changes: 4 instances match the spec."));
}

#[test]
fn an_etcd_store_of_a_newer_format_is_refused_and_left_as_it_is() {
    let test = "formats::an_etcd_store_of_a_newer_format_is_refused_and_left_as_it_is";
    let Some((cluster, dir)) = etcd_of_tend_0_1_0(test) else {
        return;
    };
    let settings = snapshots_in(&repo().join("testdata/formats/snapshots"));
    cluster.ctl(&["put", "/tend/v1/formats/format", "3"]);
    let spec = read(&dir.path().join("main.star")).replace("name = \"web\"", "name = \"www\"");
    write(&dir.path().join("main.star"), &spec);
    let before = etcd_keys(&cluster);
    let folder = contents(dir.path());
    let url = cluster.url();
    for args in [
        &["plan", "--store", &url][..],
        &["apply", "--yes", "--store", &url],
        &["destroy", "--yes", "--store", &url],
        &["status", "--store", &url],
        &["run", "--store", &url],
    ] {
        let out = tend_ends(dir.path(), args);
        assert_exit(&out, 1, args);
        let error = error_of(&out);
        assert!(
            error.contains("the state in etcd under /tend/v1/formats/ was written by a newer tend (state format 3; this tend reads up to 2)"),
            "tend {args:?}: {error}"
        );
        assert_eq!(before, etcd_keys(&cluster), "tend {args:?} wrote to etcd");
        assert_eq!(
            folder,
            contents(dir.path()),
            "tend {args:?} changed the folder"
        );
        if args[0] == "plan" {
            settings.bind(|| insta::assert_snapshot!("newer_etcd_state", error));
        }
    }
}

/// A `tend run` killed if the test ends before it does.
struct Replica(Option<std::process::Child>);

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_replica_that_meets_a_newer_format_while_it_runs_stops_instead_of_campaigning_again() {
    let test = "formats::a_replica_that_meets_a_newer_format_while_it_runs_stops_instead_of_campaigning_again";
    let Some((cluster, dir)) = etcd_of_tend_0_1_0(test) else {
        return;
    };
    let url = cluster.url();
    let args = [
        "run",
        "--store",
        &url,
        "--listen",
        "127.0.0.1:19311",
        "--resync",
        "1s",
    ];
    let mut replica = Replica(Some(spawn_tend(dir.path(), &args, Stdio::piped)));
    let Some(child) = replica.0.as_mut() else {
        unreachable!()
    };
    let leads = Instant::now() + Duration::from_secs(60);
    while cluster
        .ctl(&["get", "--prefix", "/tend/v1/formats/leader", "--keys-only"])
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < leads, "the replica never led");
        if child.try_wait().ok().flatten().is_some() {
            let out = replica.0.take().map(|c| c.wait_with_output());
            panic!("the replica ended: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A newer tend's commit, as far as this one can tell.
    cluster.ctl(&["put", "/tend/v1/formats/format", "3"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "the replica kept running on a store of a newer format"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = replica
        .0
        .take()
        .map(|c| c.wait_with_output())
        .unwrap_or_else(|| unreachable!())
        .unwrap_or_else(|e| panic!("tend run: {e}"));
    assert_exit(&out, 1, &args);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("version error: the state in etcd under /tend/v1/formats/ was written by a newer tend (state format 3"),
        "{stderr}"
    );
    // It led once or twice, not in a loop.
    let led = stderr.matches("leading (fencing token").count();
    assert!(led <= 2, "led {led} times:\n{stderr}");
}

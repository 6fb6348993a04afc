//! The `vagrant` provider against Debian's real Vagrant and its docker provider on the
//! local engine (both set up by `.ci/run`). Oracles: `docker ps` by the project's label,
//! `docker inspect`, and the machines' folders. Each test holds the engine lock of the
//! Docker tests: they run one at a time.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use engine::provider::Provider;

use crate::docker::{have_engine, ENGINE, IMAGE};
use crate::harness::{have_tool, text};
use crate::process::Project;

/// True when `vagrant` runs and a Docker engine answers; in CI both must.
pub fn have_vagrant(test: &str) -> bool {
    have_tool(
        test,
        "vagrant",
        &["--version"],
        ".ci/run installs Debian's vagrant",
    ) && have_engine(test)
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"));
    text(&out.stdout)
}

/// The project's containers: (name, state, slot), by name.
fn containers(project: &str) -> Vec<(String, String, String)> {
    let listed = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=tend.project={project}"),
        "--format",
        "{{.Names}} {{.State}} {{.Label \"tend.slot\"}}",
    ]);
    let mut found: Vec<(String, String, String)> = listed
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_owned(),
                w.next()?.to_owned(),
                w.next()?.to_owned(),
            ))
        })
        .collect();
    found.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
    found
}

fn running_slots(project: &str) -> Vec<String> {
    containers(project)
        .into_iter()
        .filter(|(_, state, _)| state == "running")
        .map(|(_, _, slot)| slot)
        .collect()
}

/// The machines' folders (each holds a Vagrantfile).
fn folders(p: &Project) -> Vec<PathBuf> {
    let dir = p.path().join(".tend").join("vagrant");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Vagrantfile").is_file())
        .collect();
    found.sort();
    found
}

/// The container's environment, one `NAME=value` a line.
fn env_of(container: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        container,
    ])
}

fn machines(size: u32, version: &str) -> String {
    format!(
        r#"group(
    name = "work",
    size = {size},
    provider = vagrant(image = "{IMAGE}"),
    flavor = flavor(command = ["sleep", "1000"], env = {{"IT_VERSION": "{version}", "IT_TRICKY": "it's \"${{x}}\" = 1"}}),
    update = rolling(max_unavailable = 1),
)
"#
    )
}

#[test]
fn a_vagrant_group_heals_rolls_scales_reaps_orphans_and_destroys_to_nothing() {
    let test = "vagrant::a_vagrant_group_heals_rolls_scales_reaps_orphans_and_destroys_to_nothing";
    if !have_vagrant(test) {
        return;
    }
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let p = Project::new("it-vagrant", &machines(3, "v1-7f3a9c"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("Apply complete: 3 created"), "{out}");
    assert_eq!(running_slots(&p.name), ["0", "1", "2"]);
    let made = folders(&p);
    assert_eq!(made.len(), 3, "{made:?}");
    for folder in &made {
        let file = std::fs::read_to_string(folder.join("Vagrantfile")).unwrap_or_default();
        assert!(
            file.contains("d.pull = false") && file.contains("'--pull=never'"),
            "{file}"
        );
        // Environment values reach the container, never the Vagrantfile.
        assert!(!file.contains("v1-7f3a9c"), "{file}");
    }
    for (name, _, _) in containers(&p.name) {
        let env = env_of(&name);
        assert!(
            env.lines().any(|l| l == "IT_VERSION=v1-7f3a9c"),
            "{name}: {env}"
        );
        assert!(
            env.lines().any(|l| l == "IT_TRICKY=it's \"${x}\" = 1"),
            "{name}: {env}"
        );
    }
    assert!(p
        .ok(&["plan"])
        .starts_with("No changes: 3 instances match the spec."));
    let status = p.ok(&["status"]);
    assert!(
        status.contains("vagrant: ") && status.contains("Vagrant 2."),
        "{status}"
    );

    // A killed container is healed; the dead one is removed.
    let (victim, _, _) = containers(&p.name).remove(1);
    docker(&["kill", &victim]);
    let plan = p.ok(&["plan"]);
    assert!(plan.starts_with("! heal    work/1 ("), "{plan}");
    // A user's Vagrant settings for other work never reach the machines tend drives.
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["apply", "--yes"])
        .current_dir(p.path())
        .env("VAGRANT_CWD", elsewhere.path())
        .env("VAGRANT_DOTFILE_PATH", elsewhere.path().join("dot"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let said = text(&out.stdout);
    assert!(said.contains("1 healed"), "{said}{}", text(&out.stderr));
    assert!(!elsewhere.path().join("dot").exists());
    assert_eq!(running_slots(&p.name), ["0", "1", "2"]);
    assert!(!containers(&p.name).iter().any(|(n, _, _)| *n == victim));

    // A changed flavor replaces every machine.
    p.write_spec(&machines(3, "v2-7f3a9c"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("3 replaced"), "{out}");
    assert_eq!(running_slots(&p.name), ["0", "1", "2"]);
    for (name, _, _) in containers(&p.name) {
        assert!(
            env_of(&name).lines().any(|l| l == "IT_VERSION=v2-7f3a9c"),
            "{name}"
        );
    }

    // 3 → 1 → 3.
    p.write_spec(&machines(1, "v2-7f3a9c"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 destroyed"), "{out}");
    assert_eq!(running_slots(&p.name), ["0"]);
    assert_eq!(folders(&p).len(), 1);
    p.write_spec(&machines(3, "v2-7f3a9c"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 created"), "{out}");
    assert_eq!(running_slots(&p.name), ["0", "1", "2"]);

    // A machine whose folder is lost is an orphan: Vagrant cannot remove it any more, so
    // the next plan heals its slot and the container goes through Docker.
    let (orphan, _, _) = containers(&p.name).remove(2);
    let folder = p.path().join(".tend").join("vagrant").join(&orphan);
    std::fs::remove_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    let plan = p.ok(&["plan"]);
    assert!(
        plan.contains("instance is dead (orphaned: its Vagrant folder is gone)"),
        "{plan}"
    );
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    assert_eq!(running_slots(&p.name), ["0", "1", "2"]);
    assert!(!containers(&p.name).iter().any(|(n, _, _)| *n == orphan));

    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains("3 destroyed"), "{out}");
    assert!(containers(&p.name).is_empty(), "{:?}", containers(&p.name));
    assert!(folders(&p).is_empty(), "{:?}", folders(&p));
}

#[test]
fn a_missing_image_is_a_clear_error_naming_it_and_is_never_pulled() {
    let test = "vagrant::a_missing_image_is_a_clear_error_naming_it_and_is_never_pulled";
    if !have_vagrant(test) {
        return;
    }
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let missing = "tend-no-such-image:v1";
    let spec = format!(
        "group(name = \"work\", size = 1, provider = vagrant(image = \"{missing}\"), flavor = flavor(command = [\"sleep\", \"1000\"]))\n"
    );
    let p = Project::new("it-vagrant-image", &spec);
    let out = p.tend(&["apply", "--yes"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "image {missing} is not on the Docker engine, and tend never pulls one"
        )),
        "{said}"
    );
    let pulled = Command::new("docker")
        .args(["image", "inspect", missing])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(!pulled, "{missing} was pulled");
    assert!(containers(&p.name).is_empty());
    assert!(folders(&p).is_empty());
}

#[test]
fn vagrant_passes_the_semantic_checks_through_the_provider_trait() {
    let test = "vagrant::vagrant_passes_the_semantic_checks_through_the_provider_trait";
    if !have_vagrant(test) {
        return;
    }
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().to_path_buf();
    let report = crate::plugins::semantics_of(
        move || -> Arc<dyn Provider> { Arc::new(providers::vagrant::VagrantProvider::new(&state)) },
        crate::plugins::template(&["sleep", "300"], serde_json::json!({"image": IMAGE})),
        "it-conformance-vagrant",
    );
    crate::plugins::all_semantics_pass("vagrant", &report);
    assert!(containers("it-conformance-vagrant").is_empty());
}

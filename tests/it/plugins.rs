//! Provider plugins: the conformance kit on the reference plugin and on a sloppy one, the
//! built-in providers through the same semantic checks, the example served by a plugin,
//! and what tend does with plugins that misbehave.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::provider::{InstanceTags, Provider, ProvisionRequest};
use engine::spec::Slot;
use providers::plugin::conformance::{self, ProviderSubject, Report};

use crate::examples::http_get;
use crate::harness::{repo, signal, snapshots_in, tend, text};
use crate::process::{wait_for, Project};

fn localproc() -> String {
    repo()
        .join("examples/plugins/localproc.py")
        .display()
        .to_string()
}

fn misbehave(mode: &str) -> Vec<String> {
    vec![
        "python3".to_owned(),
        repo()
            .join("testdata/plugins/misbehave.py")
            .display()
            .to_string(),
        mode.to_owned(),
    ]
}

fn settings() -> insta::Settings {
    snapshots_in(&repo().join("testdata/plugins/snapshots"))
}

/// Instance records the reference plugin keeps under `dir`.
fn records(dir: &Path) -> Vec<PathBuf> {
    let folder = dir.join(".tend/plugins/localproc/instances");
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    found.sort();
    found
}

/// The checks that failed, by name.
fn failed(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim_start().strip_prefix("FAILED  "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_reference_plugin_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let plugin = localproc();
    let out = tend(
        dir.path(),
        &["plugin", "conformance", "--", "python3", &plugin],
    );
    let stdout = text(&out.stdout).replace(&plugin, "examples/plugins/localproc.py");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    settings().bind(|| insta::assert_snapshot!("conformance_localproc", stdout));
    assert_eq!(
        records(dir.path()),
        Vec::<PathBuf>::new(),
        "the kit left instances"
    );
    assert_eq!(
        running_in(dir.path()),
        Vec::<u32>::new(),
        "the kit left processes"
    );
}

/// Processes whose working folder is under `dir` (an instance of the reference plugin
/// runs in its folder), whether or not a record names them.
fn running_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            });
            !zombie
                && std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .collect()
}

#[test]
fn the_kit_names_what_a_sloppy_plugin_breaks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let command = misbehave("sloppy");
    let mut args = vec!["plugin", "conformance", "--"];
    args.extend(command.iter().map(String::as_str));
    let out = tend(dir.path(), &args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let failed = failed(&stdout);
    for broken in [
        "without the magic cookie it exits 1 and writes nothing on stdout",
        "the same idempotency key gives the same instance",
        "describe answers only what carries the tags asked for",
    ] {
        assert!(
            failed.iter().any(|f| f == broken),
            "{broken} passed:\n{stdout}"
        );
    }
    // Only what it breaks fails: the rest of the protocol holds.
    assert!(
        stdout.contains("  ok      a line that is not JSON answers ParseError, and it goes on"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  ok      tags set at creation show in describe"),
        "{stdout}"
    );
}

/// Runs the semantic checks on a built-in provider through the `Provider` trait.
pub fn semantics_of(
    make: impl Fn() -> Arc<dyn Provider> + Send + Sync + 'static,
    template: ProvisionRequest,
    project: &str,
) -> Report {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let subject = ProviderSubject::new(Box::new(make), template);
    let mut report = Report::default();
    rt.block_on(conformance::semantics(&subject, project, &mut report));
    report
}

/// Insists that every semantic check ran on `subject` and passed: none failed, none was
/// waved through as not applicable.
pub fn all_semantics_pass(subject: &str, report: &Report) {
    assert!(report.passed(), "{subject}:\n{}", report.to_text());
    assert!(
        report
            .to_text()
            .contains("9 passed, 0 failed, 0 not applicable"),
        "{subject}:\n{}",
        report.to_text()
    );
}

/// A provision request running `command` with provider settings `props`.
pub fn template(command: &[&str], props: serde_json::Value) -> ProvisionRequest {
    let mut request = ProvisionRequest::bare(Slot::Index(0), InstanceTags::default());
    request.command = command.iter().map(|c| (*c).to_owned()).collect();
    request.props = serde_json::from_value(props).unwrap_or_default();
    request
}

#[test]
fn sim_and_process_pass_the_semantic_checks_through_the_provider_trait() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().to_path_buf();
    let sim = semantics_of(
        move || Arc::new(providers::sim::SimProvider::new(&state)),
        template(&[], serde_json::json!({})),
        "it-conformance-sim",
    );
    assert!(sim.passed(), "sim:\n{}", sim.to_text());
    let state = dir.path().to_path_buf();
    let process = semantics_of(
        move || Arc::new(providers::process::ProcessProvider::new(&state)),
        template(&["sleep", "300"], serde_json::json!({"cgroups": false})),
        "it-conformance-process",
    );
    assert!(process.passed(), "process:\n{}", process.to_text());
    // Every check ran on both: none is waved through as not applicable.
    for report in [&sim, &process] {
        assert_eq!(report.checks.len(), 9, "{}", report.to_text());
        assert!(report
            .to_text()
            .contains("9 passed, 0 failed, 0 not applicable"));
    }
    assert!(crate::process::live_tagged("it-conformance-process").is_empty());
}

#[test]
fn docker_passes_the_semantic_checks_through_the_provider_trait() {
    if !crate::docker::have_engine("docker_passes_the_semantic_checks_through_the_provider_trait") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().to_path_buf();
    let project = "it-conformance-docker";
    let report = semantics_of(
        move || Arc::new(providers::docker::DockerProvider::new(&state)),
        template(
            &["sleep", "300"],
            serde_json::json!({"image": crate::docker::IMAGE, "ports": {}, "pull": false}),
        ),
        project,
    );
    let left = crate::docker::containers(project, true);
    assert!(report.passed(), "docker:\n{}", report.to_text());
    assert!(report
        .to_text()
        .contains("9 passed, 0 failed, 0 not applicable"));
    assert_eq!(left, Vec::<String>::new(), "the checks left containers");
}

/// A project whose group `web` is made by the plugin `command` starts, beside a `sim`
/// group that must come through whatever the plugin does.
fn plugin_project(name: &str, command: &[String]) -> Project {
    Project::new(
        name,
        &format!(
            r#"bad = plugin(command = {command:?}, name = "bad")
group(name = "keep", size = 1, provider = sim(), flavor = flavor(command = ["serve"]))
group(name = "web", size = 1, provider = bad, flavor = flavor(command = ["sleep", "60"]))
"#
        ),
    )
}

/// Applies, insisting on exit status `code`; stdout and stderr.
fn apply(project: &Project, code: i32) -> (String, String) {
    let out = project.tend(&["apply", "--yes"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The error line of a failed command, with the project's folder as `<dir>`.
fn error_of(project: &Project, stderr: &str) -> String {
    // tend's own error comes last, after what the plugin logged (its logs may hold "error:").
    let at = stderr.rfind("\nerror: ").map_or(0, |i| i + 1);
    stderr[at..].replace(&project.path().display().to_string(), "<dir>")
}

#[test]
fn a_plugin_that_is_not_there_is_named_and_nothing_is_applied() {
    let p = plugin_project(
        "it-plugin-missing",
        &["/nonexistent/tend-plugin-x".to_owned()],
    );
    let (_, stderr) = apply(&p, 1);
    settings().bind(|| insta::assert_snapshot!("missing_plugin", error_of(&p, &stderr)));
    // Nothing was committed and nothing made: the store has no applied spec.
    let status = p.tend(&["status"]);
    assert!(
        !text(&status.stdout).contains("serial 1"),
        "{}",
        text(&status.stdout)
    );
}

#[test]
fn a_plugin_that_writes_on_stdout_before_the_handshake_is_refused() {
    let p = plugin_project("it-plugin-chatty", &misbehave("chatty"));
    let (_, stderr) = apply(&p, 1);
    settings().bind(|| insta::assert_snapshot!("chatty_plugin", error_of(&p, &stderr)));
}

#[test]
fn a_plugin_of_another_protocol_version_is_refused() {
    let p = plugin_project("it-plugin-old", &misbehave("old"));
    let (_, stderr) = apply(&p, 1);
    settings().bind(|| insta::assert_snapshot!("old_plugin", error_of(&p, &stderr)));
}

#[test]
fn a_plugin_that_crashes_mid_provision_is_restarted_and_quoted_and_leaves_nothing() {
    let p = plugin_project("it-plugin-crash", &misbehave("crash"));
    let (stdout, stderr) = apply(&p, 1);
    // Its last stderr lines are in the failure; it was started again for each attempt.
    assert!(stdout.contains("x gave up   web/0"), "{stdout}");
    assert!(
        stdout.contains("about to crash in the middle of a provision"),
        "{stdout}"
    );
    assert!(stderr.contains("plugin bad: down: crashed"), "{stderr}");
    assert!(
        stdout.contains("+ created   keep/0"),
        "the sim group must come through:\n{stdout}"
    );
    assert_eq!(records(p.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_provision_past_its_deadline_is_looked_up_by_its_key_before_another() {
    let p = plugin_project("it-plugin-hang", &misbehave("hang"));
    let (stdout, _) = apply(&p, 1);
    assert!(
        stdout.contains("its outcome is unknown, so tend looks for an instance with key"),
        "{stdout}"
    );
    // Every attempt used the one key: the plugin saw a single key for web/0.
    let keys: std::collections::BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split("instance with key ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(keys.len(), 1, "{stdout}");
    assert_eq!(records(p.path()), Vec::<PathBuf>::new());
}

#[test]
fn an_instance_made_without_its_tags_is_removed_and_the_create_fails() {
    let p = plugin_project("it-plugin-untagged", &misbehave("untagged"));
    let (stdout, _) = apply(&p, 1);
    assert!(
        stdout.contains("does not show it with its tags; tend removed it"),
        "{stdout}"
    );
    assert_eq!(
        records(p.path()),
        Vec::<PathBuf>::new(),
        "an untagged instance was left"
    );
}

#[test]
fn a_plugin_flooding_stderr_is_cut_short_and_still_works() {
    let p = plugin_project("it-plugin-flood", &misbehave("flood"));
    let (stdout, stderr) = apply(&p, 0);
    assert!(stdout.contains("+ created   web/0"), "{stdout}");
    let forwarded = stderr
        .lines()
        .filter(|l| l.starts_with("plugin bad: flood line"))
        .count();
    // 100 a second: of 20,000 lines written at once, a few hundred at most get through.
    assert!(forwarded <= 1_000, "{forwarded} lines forwarded");
    assert!(stderr.contains("more stderr lines left out)"), "{stderr}");
    assert_eq!(records(p.path()).len(), 1);
    p.ok(&["destroy", "--yes"]);
    assert_eq!(records(p.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_plugin_that_will_not_exit_is_killed_at_the_end_of_the_shutdown_sequence() {
    let p = plugin_project("it-plugin-stubborn", &misbehave("stubborn"));
    let out = p.tend(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pid = std::fs::read_to_string(p.path().join("stubborn.pid"))
        .unwrap_or_else(|e| panic!("the plugin wrote no pid: {e}"));
    // shutdown, exit, stdin closed, SIGTERM (ignored), then SIGKILL: gone when tend is.
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "plugin {pid} outlived tend"
    );
}

#[test]
fn tend_run_starts_and_watches_a_plugin_first_named_by_a_spec_it_adopts() {
    let p = Project::new(
        "it-plugin-adopted",
        r#"group(name = "keep", size = 1, provider = sim(), flavor = flavor(command = ["serve"]))
"#,
    );
    std::fs::copy(
        repo().join("examples/plugins/localproc.py"),
        p.path().join("localproc.py"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    p.ok(&["apply", "--yes"]);
    // A resync far longer than the wait below: only the plugin's own word heals in time.
    let run = Stopped(crate::harness::spawn_tend(
        p.path(),
        &["run", "--listen", "127.0.0.1:17481", "--resync", "300s"],
        std::process::Stdio::null,
    ));
    wait_for(|| http_get(17481, "/healthz").is_ok());
    p.write_spec(
        r#"group(name = "keep", size = 1, provider = sim(), flavor = flavor(command = ["serve"]))
lp = plugin(command = ["python3", "localproc.py"])
group(name = "web", size = 2, provider = lp, flavor = flavor(command = ["sleep", "120"]))
"#,
    );
    // Handed to the running controller, which was started without the plugin.
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("converged"), "{out}");
    wait_for(|| records(p.path()).len() == 2);
    let killed = pid_in_slot(p.path(), "0").unwrap_or_else(|| panic!("no record of web/0"));
    signal(killed, "-9");
    wait_for(|| pids_in_slot(p.path(), "0").iter().any(|pid| *pid != killed));
    drop(run);
    p.ok(&["destroy", "--yes"]);
    assert_eq!(records(p.path()), Vec::<PathBuf>::new());
}

/// A process of a test's own, by pid, killed when dropped if it still runs.
struct KilledOnDrop(String);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if Path::new(&format!("/proc/{}", self.0)).exists() {
            signal(&self.0, "-9");
        }
    }
}

/// A child process stopped (SIGTERM, then waited for) when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0.id(), "-TERM");
        let _ = self.0.wait();
    }
}

#[test]
fn a_plan_interrupted_by_ctrl_c_still_shuts_its_plugin_down() {
    let p = switched_project("it-plugin-deaf", 1);
    misbehave_as(&p, "deaf");
    let plan = Stopped(crate::harness::spawn_tend(
        p.path(),
        &["plan"],
        std::process::Stdio::null,
    ));
    // The plugin hangs in describe, ignoring SIGTERM and its stdin closing.
    wait_for(|| p.path().join("stubborn.pid").exists());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid =
        std::fs::read_to_string(p.path().join("stubborn.pid")).unwrap_or_else(|e| panic!("{e}"));
    // Should tend fail to end it, the test does, by its pid.
    let _plugin = KilledOnDrop(pid.trim().to_owned());
    signal(plan.0.id(), "-INT");
    let mut plan = plan;
    let status = plan.0.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status.code(),
        Some(1),
        "tend plan was not interrupted in order"
    );
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "plugin {pid} outlived an interrupted tend plan"
    );
    misbehave_as(&p, "");
}

/// The pid of the reference plugin's instance in `slot`, from its record.
fn pid_in_slot(dir: &Path, slot: &str) -> Option<u32> {
    pids_in_slot(dir, slot).into_iter().next()
}

/// The pids the reference plugin's records of `slot` name.
fn pids_in_slot(dir: &Path, slot: &str) -> Vec<u32> {
    records(dir)
        .iter()
        .filter_map(|path| {
            let record: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
            if record["tags"]["tend.slot"] != slot {
                return None;
            }
            u32::try_from(record["pid"].as_u64()?).ok()
        })
        .collect()
}

#[test]
fn the_plugin_example_serves_and_tend_run_heals_it() {
    let example = repo().join("examples/plugins");
    let spec = std::fs::read_to_string(example.join("main.star")).unwrap_or_else(|e| panic!("{e}"));
    let p = Project::new(
        "it-example-plugins",
        &spec.replace("project(name = \"plugins\")\n", ""),
    );
    std::fs::copy(example.join("localproc.py"), p.path().join("localproc.py"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 created"), "{out}");
    for (port, slot) in [(8501, 0), (8502, 1)] {
        let page = http_get(port, "/").unwrap_or_else(|e| panic!("{port}: {e}"));
        assert_eq!(page, format!("<p>web/{slot}, made by a plugin</p>\n"));
    }
    let run = crate::run::Running::start(&p, 17482, &[]);
    let killed = pid_in_slot(p.path(), "0").unwrap_or_else(|| panic!("no record of web/0"));
    signal(killed, "-9");
    // The plugin says the instance changed; tend run looks, and heals it through the plugin.
    wait_for(|| {
        pids_in_slot(p.path(), "0").iter().any(|pid| *pid != killed) && http_get(8501, "/").is_ok()
    });
    drop(run);
    p.ok(&["destroy", "--yes"]);
    assert!(http_get(8501, "/").is_err() && http_get(8502, "/").is_err());
    assert_eq!(records(p.path()), Vec::<PathBuf>::new());
}

/// A project of one group of `size` made by the misbehaving plugin in `switch` mode (its
/// misbehaviour read from `misbehave.mode` in the project's folder).
fn switched_project(name: &str, size: u32) -> Project {
    let p = Project::new(name, "");
    write_switched(&p, size);
    p
}

fn write_switched(p: &Project, size: u32) {
    let command = misbehave("switch");
    p.write_spec(&format!(
        r#"bad = plugin(command = {command:?}, name = "bad")
group(name = "web", size = {size}, provider = bad, flavor = flavor(command = ["sleep", "60"]))
"#
    ));
}

fn misbehave_as(p: &Project, mode: &str) {
    std::fs::write(p.path().join("misbehave.mode"), mode).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_describe_listing_an_instance_twice_is_refused_and_nothing_loops() {
    let p = switched_project("it-plugin-twice", 1);
    p.ok(&["apply", "--yes"]);
    misbehave_as(&p, "twice");
    let out = p.tend(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("twice: one id is one instance"), "{stderr}");
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    // Nothing was made or removed from the bad view.
    assert_eq!(records(p.path()).len(), 1);
    misbehave_as(&p, "");
}

#[test]
fn a_provision_answering_another_instances_id_touches_no_other_instance() {
    let p = switched_project("it-plugin-wrongid", 1);
    p.ok(&["apply", "--yes"]);
    let first = records(p.path());
    misbehave_as(&p, "wrongid");
    write_switched(&p, 2);
    let out = p.tend(&["apply", "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(stderr.contains("tend keeps that one"), "{stderr}");
    // The first instance is untouched, and the second is the one made under its key.
    let now = records(p.path());
    assert_eq!(now.len(), 2);
    assert!(now.contains(&first[0]));
    misbehave_as(&p, "");
    let status = p.ok(&["status"]);
    assert_eq!(status.matches("running").count(), 2, "{status}");
}

#[test]
fn a_provision_answered_deadline_exceeded_is_found_by_its_key_not_made_again() {
    let p = switched_project("it-plugin-late", 1);
    misbehave_as(&p, "late");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 created"), "{out}");
    assert_eq!(
        records(p.path()).len(),
        1,
        "one provision made more than one instance"
    );
}

/// Instance records of the reference plugin kept under `root`.
fn records_in(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("instances"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    found.sort();
    found
}

#[test]
fn a_changed_plugin_config_rolls_the_group_and_leaves_nothing_in_the_old_one() {
    let spec = |root: &str| {
        let command = vec!["python3".to_owned(), localproc()];
        format!(
            r#"lp = plugin(command = {command:?}, config = {{"root": "{root}"}}, name = "lp")
group(name = "web", size = 2, provider = lp, flavor = flavor(command = ["sleep", "60"]),
      update = rolling(max_unavailable = 1))
"#
        )
    };
    let p = Project::new("it-plugin-config", &spec("a"));
    p.ok(&["apply", "--yes"]);
    let old = records_in(&p.path().join("a"));
    assert_eq!(old.len(), 2);
    let pids: Vec<u64> = old
        .iter()
        .filter_map(|path| {
            let record: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
            record["pid"].as_u64()
        })
        .collect();
    p.write_spec(&spec("b"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 replaced"), "{out}");
    assert_eq!(
        records_in(&p.path().join("a")),
        Vec::<PathBuf>::new(),
        "left in the old root"
    );
    assert_eq!(records_in(&p.path().join("b")).len(), 2);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        assert!(stat.is_empty() || zombie, "old instance {pid} runs on");
    }
}

#[test]
fn a_provision_answering_another_projects_instance_touches_nothing() {
    let shared = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = shared.path().display().to_string();
    let spec = |project_dir_mode: bool| {
        let command = misbehave(if project_dir_mode { "switch" } else { "good" });
        format!(
            r#"bad = plugin(command = {command:?}, config = {{"root": "{root}"}}, name = "bad")
group(name = "web", size = 1, provider = bad, flavor = flavor(command = ["sleep", "60"]))
"#
        )
    };
    let other = Project::new("it-plugin-other", &spec(false));
    other.ok(&["apply", "--yes"]);
    let theirs = records_in(shared.path());
    assert_eq!(theirs.len(), 1);
    let id = theirs[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let p = Project::new("it-plugin-answers-theirs", &spec(true));
    misbehave_as(&p, &format!("answeronly:{id}"));
    let out = p.tend(&["apply", "--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("tend touches nothing"), "{stdout}");
    // The other project's instance is there and running.
    assert_eq!(records_in(shared.path()), theirs);
    let status = other.ok(&["status"]);
    assert!(status.contains(&format!("{id}    running")), "{status}");
    misbehave_as(&p, "");
}

/// A project whose group `web` of one is made by the reference plugin with `config`
/// (a Starlark dict) and runs `command`.
fn localproc_project(name: &str, config: &str, command: &str) -> Project {
    let plugin = vec!["python3".to_owned(), localproc()];
    Project::new(
        name,
        &format!(
            r#"lp = plugin(command = {plugin:?}, config = {config}, name = "lp")
group(name = "web", size = 1, provider = lp, flavor = flavor(command = {command}))
"#
        ),
    )
}

#[test]
fn a_config_the_plugin_refuses_at_its_handshake_is_a_spec_error() {
    let p = localproc_project(
        "it-plugin-bad-config",
        r#"{"rot": "x"}"#,
        r#"["sleep", "60"]"#,
    );
    let out = p.tend(&["plan"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: spec error:"), "{stderr}");
    assert!(stderr.contains("refused its config"), "{stderr}");
    assert!(stderr.contains("unknown config keys ['rot']"), "{stderr}");
}

#[test]
fn an_instance_whose_program_exits_at_once_is_not_reported_running() {
    let p = localproc_project("it-plugin-exits", "{}", r#"["false"]"#);
    let _ = p.tend(&["apply", "--yes"]);
    let status = p.tend(&["status"]);
    let shown = text(&status.stdout);
    assert!(shown.contains("0/1 live"), "{shown}");
}

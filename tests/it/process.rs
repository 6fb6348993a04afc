//! `apply`, `destroy`, `status` and saved plans with real local processes.
//!
//! Each test owns a project (a temp folder with its own name); its processes are found by
//! their `TEND_PROJECT` tag and removed with `tend destroy`, then by tag if anything is left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{signal, spawn_tend, tend, text};

/// A live instance process: pid, group, slot, hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub pid: u32,
    pub group: String,
    pub slot: String,
    pub hash: String,
}

/// A project in a temp folder, cleaned up on drop.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Project {
    /// A project named `name` whose spec is `spec`.
    pub fn new(name: &str, spec: &str) -> Project {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let project = Project {
            dir,
            name: name.to_owned(),
        };
        project.write_spec(spec);
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_spec(&self, spec: &str) {
        let text = format!("project(name = {:?})\n{spec}", self.name);
        std::fs::write(self.path().join("main.star"), text).unwrap_or_else(|e| panic!("spec: {e}"));
    }

    pub fn tend(&self, args: &[&str]) -> Output {
        tend(self.path(), args)
    }

    /// Runs tend and insists on exit status 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.tend(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "tend {args:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Live processes tagged with this project, by slot.
    pub fn live(&self) -> Vec<Live> {
        live_tagged(&self.name)
    }

    /// Every file stored under the project's folder (links are not storage: skipped).
    pub fn state_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut stack = vec![self.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_symlink() {
                    continue;
                }
                if kind.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files
    }
}

impl Drop for Project {
    /// Destroys the project, and checks the process table for its tags: a test whose
    /// instances leave a process behind fails.
    fn drop(&mut self) {
        let _ = self.tend(&["destroy", "--yes"]);
        let left = self.live();
        for live in &left {
            // Only processes carrying this test's project tag are touched.
            signal(live.pid, "-9");
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("destroy left processes of {} running: {left:?}", self.name);
        }
    }
}

/// Processes whose environment carries `TEND_PROJECT=project` (zombies excluded).
pub fn live_tagged(project: &str) -> Vec<Live> {
    live_marked("TEND_", project)
}

/// Processes whose environment carries `{prefix}PROJECT=project` (zombies excluded), with
/// their `{prefix}GROUP`, `{prefix}SLOT` and `{prefix}HASH`: the instances of providers
/// that set no tag variables are found by variables their flavor sets.
pub fn live_marked(prefix: &str, project: &str) -> Vec<Live> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let env: BTreeMap<String, String> = environ
            .split(|b| *b == 0)
            .filter_map(|e| {
                std::str::from_utf8(e)
                    .ok()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let var = |name: &str| env.get(&format!("{prefix}{name}")).cloned();
        if var("PROJECT").as_deref() == Some(project) {
            found.push(Live {
                pid,
                group: var("GROUP").unwrap_or_default(),
                slot: var("SLOT").unwrap_or_default(),
                hash: var("HASH").unwrap_or_default(),
            });
        }
    }
    found.sort_by(|a, b| a.slot.cmp(&b.slot).then(a.pid.cmp(&b.pid)));
    found
}

fn sleeper(size: u32, arg: &str, extra: &str) -> String {
    format!(
        r#"group(name = "work", size = {size}, provider = process(), flavor = flavor(command = ["sleep", "{arg}"]){extra})
"#
    )
}

/// `groups` groups of `size` sleepers, each created only once the one before it passes its
/// health check `check`: an apply that makes them in steps (health gates run side by side
/// within a group, so a chain is what spaces them out).
pub fn chain(groups: u32, size: u32, check: &str) -> String {
    (0..groups)
        .map(|n| {
            let after = if n == 0 {
                String::new()
            } else {
                format!(", depends_on = [\"step{}\"]", n - 1)
            };
            format!(
                "group(name = \"step{n}\", size = {size}, provider = process(), flavor = flavor(command = [\"sleep\", \"1000\"], health = {check}){after})\n"
            )
        })
        .collect()
}

fn slots(live: &[Live]) -> Vec<String> {
    let mut s: Vec<String> = live.iter().map(|l| l.slot.clone()).collect();
    s.sort_by_key(|x| x.parse::<u32>().unwrap_or(u32::MAX));
    s
}

#[test]
fn apply_converges_then_heals_a_killed_instance_and_destroy_leaves_nothing() {
    let p = Project::new("it-heal", &sleeper(3, "1000", ""));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("Apply complete: 3 created"), "{out}");
    let live = p.live();
    assert_eq!(slots(&live), ["0", "1", "2"]);
    assert!(p
        .ok(&["plan"])
        .starts_with("No changes: 3 instances match the spec."));

    let victim = live[1].pid;
    signal(victim, "-9");
    wait_for(|| !p.live().iter().any(|l| l.pid == victim));
    let plan = p.ok(&["plan"]);
    assert!(plan.starts_with("! heal    work/1 ("), "{plan}");
    assert!(plan.contains("instance is dead"), "{plan}");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    assert_eq!(slots(&p.live()), ["0", "1", "2"]);

    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains("3 destroyed"), "{out}");
    assert!(p.live().is_empty());
}

/// The processes of the sessions that `leaders` lead, with their start times.
fn session_members(leaders: &[u32]) -> Vec<(u32, u64)> {
    engine::procfs::pids()
        .into_iter()
        .filter_map(|pid| Some((pid, engine::procfs::stat(pid)?)))
        .filter(|(_, s)| leaders.contains(&(s.session as u32)) && !s.is_zombie())
        .map(|(pid, s)| (pid, s.start_ticks))
        .collect()
}

#[test]
fn destroy_stops_what_an_instance_started_too() {
    // A shell that dies at once on SIGTERM must not leave its child behind.
    let p = Project::new(
        "it-children",
        r#"group(name = "work", size = 3, provider = process(), flavor = flavor(command = ["sh", "-c", "sleep 1000; true"]))
"#,
    );
    p.ok(&["apply", "--yes"]);
    let leaders: Vec<u32> = p.live().iter().map(|l| l.pid).collect();
    let mut members = Vec::new();
    wait_for(|| {
        members = session_members(&leaders);
        members.len() == 6
    });
    p.ok(&["destroy", "--yes"]);
    let left: Vec<_> = members
        .iter()
        .filter(|(pid, ticks)| engine::procfs::is_alive(*pid, *ticks))
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
}

#[test]
fn one_look_calls_an_instance_unhealthy_exactly_when_a_controller_would() {
    let flag = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = Project::new(
        "it-one-look",
        &format!(
            r#"group(name = "work", size = 2, provider = process(),
      flavor = flavor(command = ["sleep", "1000"],
                      health = exec(command = ["test", "-e", "{}/{{{{ instance.index }}}}"], grace_period = "0s", interval = "200ms", failures = 3)))
"#,
            flag.path().display()
        ),
    );
    for slot in ["0", "1"] {
        std::fs::write(flag.path().join(slot), "").unwrap_or_else(|e| panic!("{e}"));
    }
    p.ok(&["apply", "--yes"]);
    assert!(p.ok(&["plan"]).starts_with("No changes: 2 instances"));
    // Slot 1 stops passing its check: one look probes it up to its threshold.
    std::fs::remove_file(flag.path().join("1")).unwrap_or_else(|e| panic!("{e}"));
    let plan = p.ok(&["plan"]);
    assert!(plan.starts_with("! heal    work/1 ("), "{plan}");
    assert!(
        plan.contains("unhealthy past its failure threshold"),
        "{plan}"
    );
    let status = p.ok(&["status"]);
    assert!(status.contains("unhealthy"), "{status}");
    assert!(!status.contains("starting"), "{status}");
}

#[test]
fn deleting_the_state_folder_loses_no_instance() {
    let p = Project::new("it-stateless", &sleeper(2, "1000", ""));
    p.ok(&["apply", "--yes"]);
    std::fs::remove_dir_all(p.path().join(".tend")).unwrap_or_else(|e| panic!("{e}"));
    assert!(p
        .ok(&["plan"])
        .starts_with("No changes: 2 instances match the spec."));
    let status = p.ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    assert_eq!(
        status["groups"][0]["instances"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn scale_down_removes_the_highest_slots() {
    let p = Project::new("it-scale", &sleeper(4, "1000", ""));
    p.ok(&["apply", "--yes"]);
    p.write_spec(&sleeper(2, "1000", ""));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 destroyed"), "{out}");
    assert_eq!(slots(&p.live()), ["0", "1"]);
}

#[test]
fn a_rolling_update_never_has_more_than_max_unavailable_down() {
    let update = ", update = rolling(max_unavailable = 1)";
    let p = Project::new("it-rolling", &sleeper(4, "1000", update));
    p.ok(&["apply", "--yes"]);
    let old_hash = p.live()[0].hash.clone();
    p.write_spec(&sleeper(4, "1001", update));

    let mut child = spawn_tend(p.path(), &["apply", "--yes"], Stdio::piped);
    let mut fewest = usize::MAX;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        let live = p.live().len();
        fewest = fewest.min(live);
        most = most.max(live);
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("4 replaced"));
    assert!(fewest >= 3, "{fewest} of 4 instances were up at one point");
    assert!(most <= 4, "{most} instances at once with max_surge = 0");
    let live = p.live();
    assert_eq!(slots(&live), ["0", "1", "2", "3"]);
    assert!(live.iter().all(|l| l.hash != old_hash));
}

#[test]
fn sigkill_during_apply_then_apply_again_gives_exactly_the_allocation() {
    // Four steps of five, each waiting for an exec health check of the step before.
    let spec = chain(
        4,
        5,
        r#"exec(command = ["sleep", "0.3"], grace_period = "0s")"#,
    );
    let p = Project::new("it-crash", &spec);
    let mut child = spawn_tend(p.path(), &["apply", "--yes"], Stdio::null);
    wait_for(|| p.live().len() >= 5);
    let _ = child.kill();
    let _ = child.wait();
    let partial = p.live().len();
    assert!(
        (5..20).contains(&partial),
        "killed after {partial} instances"
    );

    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains(&format!("{} created", 20 - partial)), "{out}");
    let live = p.live();
    assert_eq!(live.len(), 20, "{live:?}");
    // Every step holds slots 0 to 4 exactly once.
    let mut slots: Vec<String> = live
        .iter()
        .map(|l| format!("{}/{}", l.group, l.slot))
        .collect();
    slots.sort();
    let expected: Vec<String> = (0..4)
        .flat_map(|g| (0..5).map(move |s| format!("step{g}/{s}")))
        .collect();
    assert_eq!(slots, expected);
    let status: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", "--json"])).unwrap_or_default();
    assert_eq!(status["orphans"], serde_json::json!([]));
}

#[test]
fn a_second_apply_is_refused_while_one_runs() {
    let spec = chain(
        3,
        2,
        r#"exec(command = ["sleep", "0.3"], grace_period = "0s")"#,
    );
    let p = Project::new("it-lock", &spec);
    let mut first = spawn_tend(p.path(), &["apply", "--yes"], Stdio::null);
    wait_for(|| !p.live().is_empty());
    let second = p.tend(&["apply", "--yes"]);
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(1));
    let stderr = text(&second.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: environment error: the project is locked by `tend apply` (pid {})",
            first.id()
        )),
        "{stderr}"
    );
    assert_eq!(p.live().len(), 6, "the refused apply changed something");
}

#[test]
fn a_stale_saved_plan_is_refused() {
    let p = Project::new("it-stale", &sleeper(2, "1000", ""));
    p.ok(&["plan", "-o", "first.plan"]);
    p.ok(&["apply", "--yes"]);
    // The instances changed since first.plan was made.
    let out = p.tend(&["apply", "first.plan", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the saved plan is stale: the running instances changed"),
        "{}",
        text(&out.stderr)
    );

    p.ok(&["plan", "-o", "second.plan"]);
    p.write_spec(&sleeper(3, "1000", ""));
    let out = p.tend(&["apply", "second.plan", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the saved plan is stale: main.star changed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(p.live().len(), 2);

    // A fresh saved plan applies.
    p.ok(&["plan", "-o", "third.plan"]);
    let out = p.ok(&["apply", "third.plan", "--yes"]);
    assert!(out.contains("1 created"), "{out}");
}

#[test]
fn apply_needs_yes_when_not_on_a_terminal() {
    let p = Project::new("it-confirm", &sleeper(1, "1000", ""));
    let out = p.tend(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert!(p.live().is_empty());
}

#[test]
fn a_secret_reaches_its_instance_and_nothing_else() {
    let secret = format!("s3cr3t-{}", std::process::id());
    let spec = r#"group(name = "api", size = 1, provider = process(), flavor = flavor(command = ["sleep", "1000"], env = {"TOKEN": secret("TEND_IT_SECRET")}, secret_files = {"keys/token": secret("TEND_IT_SECRET")}))
"#;
    let p = Project::new("it-secret", spec);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(args)
            .current_dir(p.path())
            .env("TEND_IT_SECRET", &secret)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut printed = String::new();
    for args in [
        vec!["plan", "-o", "saved.plan"],
        vec!["apply", "--yes"],
        vec!["status", "--json"],
        vec!["plan", "--json"],
        vec!["validate", "--json"],
    ] {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        printed.push_str(&text(&out.stdout));
        printed.push_str(&text(&out.stderr));
    }
    assert!(!printed.contains(&secret), "the secret was printed");
    for file in p.state_files() {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&secret),
            "the secret is in {}",
            file.display()
        );
    }
    let live = p.live();
    assert_eq!(live.len(), 1);
    let environ = std::fs::read(format!("/proc/{}/environ", live[0].pid)).unwrap_or_default();
    assert!(String::from_utf8_lossy(&environ).contains(&format!("TOKEN={secret}")));
    // The secret file is in the instance's working folder, as a link to memory.
    let workdir =
        std::fs::read_link(format!("/proc/{}/cwd", live[0].pid)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        workdir.starts_with(p.path().join(".tend/process/run")),
        "{}",
        workdir.display()
    );
    let link = workdir.join("keys/token");
    let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{e}"));
    assert!(!target.starts_with(p.path()), "{}", target.display());
    assert_eq!(std::fs::read_to_string(&link).ok(), Some(secret.clone()));

    // Without the variable, apply refuses to start the instance and says which secret.
    p.write_spec(&spec.replace("size = 1", "size = 2"));
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("secret TEND_IT_SECRET is not set"),
        "{}",
        text(&out.stdout)
    );
    // Destroyed with its instance: nothing of the secret is left in memory either.
    p.ok(&["destroy", "--yes"]);
    assert!(!target.exists(), "{} is still there", target.display());
}

/// Waits up to 60 s for `condition` (event-driven tests: generous for a loaded machine).
pub fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn versioned(arg: &str, health: &str, on_failure: &str) -> String {
    format!(
        r#"group(
    name = "work",
    size = 3,
    provider = process(),
    flavor = flavor(command = ["sleep", "{arg}"]{health}),
    update = rolling(max_unavailable = 1, health_timeout = "20s", on_failure = "{on_failure}"),
)
"#
    )
}

const NEVER_HEALTHY: &str = r#", health = exec(command = ["false"], grace_period = "0s", interval = "100ms", failures = 1)"#;

#[test]
fn a_failed_rollout_pauses_at_the_failed_batch() {
    let p = Project::new("it-pause", &versioned("1000", "", "pause"));
    p.ok(&["apply", "--yes"]);
    let old = p.live()[0].hash.clone();
    p.write_spec(&versioned("1001", NEVER_HEALTHY, "pause"));
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("x failed    work/0 (replace)"), "{stdout}");
    assert!(
        stdout.contains("Apply incomplete: 0 done, 1 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("group work is paused: work/0: new instance"),
        "{stdout}"
    );
    // The next look shows the pause, and a controller would keep it.
    let status = p.ok(&["status"]);
    assert!(status.contains("PAUSED: work/0: new instance"), "{status}");
    // The plan says what apply would do: nothing while paused, and not "no changes".
    let plan = p.tend(&["plan", "--detailed-exitcode"]);
    let shown = text(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{shown}");
    assert!(shown.contains("group work is paused: work/0"), "{shown}");
    assert!(shown.contains("Nothing to do while held"), "{shown}");
    assert!(!shown.contains("replace "), "{shown}");
    let live = p.live();
    assert_eq!(live.iter().filter(|l| l.hash == old).count(), 2, "{live:?}");
}

#[test]
fn a_failed_rollout_with_rollback_returns_to_the_last_applied_version() {
    let p = Project::new("it-rollback", &versioned("1000", "", "rollback"));
    p.ok(&["apply", "--yes"]);
    let old = p.live()[0].hash.clone();
    p.write_spec(&versioned("1001", NEVER_HEALTHY, "rollback"));
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Rolling back work to its previous version: work/0: new instance"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Apply incomplete: 1 done, 1 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("group work is rolled back: "), "{stdout}");
    let live = p.live();
    assert_eq!(slots(&live), ["0", "1", "2"]);
    assert!(live.iter().all(|l| l.hash == old), "{live:?}");
}

#[test]
fn a_rollback_returns_every_slot_of_the_failed_batch() {
    // Two replacements in one batch fail; the second fails after the first already rolled
    // the group back, and its slot must go back too, not be given up on.
    let spec = |arg: &str, health: &str| {
        format!(
            r#"group(
    name = "work",
    size = 4,
    provider = process(),
    flavor = flavor(command = ["sleep", "{arg}"]{health}),
    update = rolling(max_unavailable = 2, health_timeout = "20s", on_failure = "rollback"),
)
"#
        )
    };
    let p = Project::new("it-rollback-batch", &spec("1000", ""));
    p.ok(&["apply", "--yes"]);
    let old = p.live()[0].hash.clone();
    p.write_spec(&spec("1001", NEVER_HEALTHY));
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("group work is rolled back: "), "{stdout}");
    assert!(!stdout.contains("gave up"), "{stdout}");
    let live = p.live();
    assert_eq!(slots(&live), ["0", "1", "2", "3"]);
    assert!(live.iter().all(|l| l.hash == old), "{live:?}");
}

#[test]
fn ctrl_c_stops_new_actions_and_leaves_only_tagged_instances() {
    let spec = chain(
        4,
        3,
        r#"exec(command = ["sleep", "0.2"], grace_period = "0s")"#,
    );
    let p = Project::new("it-interrupt", &spec);
    let child = spawn_tend(p.path(), &["apply", "--yes"], Stdio::piped);
    wait_for(|| p.live().len() >= 3);
    signal(child.id(), "-INT");
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Stopping: no new actions start; running ones finish."));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Apply incomplete (stopped)"), "{stdout}");
    let created = stdout
        .lines()
        .filter(|l| l.starts_with("+ created"))
        .count();
    // Every process that exists is a finished, tagged instance: none was left half made.
    assert_eq!(p.live().len(), created, "{stdout}");
    assert!(created < 12);
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains(&format!("{} created", 12 - created)), "{out}");
}

#[test]
fn status_shows_outdated_instances_and_orphans() {
    let p = Project::new("it-status", &sleeper(2, "1000", ""));
    p.ok(&["apply", "--yes"]);
    let two = format!(
        "{}{}",
        sleeper(2, "1001", ""),
        r#"group(name = "extra", size = 1, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#
    );
    p.write_spec(&two);
    p.ok(&["apply", "--yes"]);
    // Back to one group whose template changed: "extra" is now an orphan, "work" outdated.
    p.write_spec(&sleeper(2, "1002", ""));
    let status: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", "--json"])).unwrap_or_default();
    let instances = status["groups"][0]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(instances.len(), 2);
    assert!(
        instances
            .iter()
            .all(|i| i["outdated"] == true && i["health"] == "no check"),
        "{status}"
    );
    assert_eq!(
        status["orphans"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["serial"], 2);
    let text = p.ok(&["status"]);
    assert!(text.contains("(outdated)"), "{text}");
    assert!(
        text.contains("orphans (tagged with the project, owned by no group):"),
        "{text}"
    );
}

#[test]
fn of_twenty_applies_at_once_exactly_one_acts_and_the_others_name_it() {
    let spec = r#"group(name = "work", size = 3, provider = process(), flavor = flavor(command = ["sleep", "1000"], health = exec(command = ["sleep", "0.3"], grace_period = "0s")))
"#;
    let p = Project::new("it-lock-race", spec);
    let applies: Vec<std::process::Child> = (0..20)
        .map(|_| spawn_tend(p.path(), &["apply", "--yes"], Stdio::piped))
        .collect();
    let outcomes: Vec<(u32, Output)> = applies
        .into_iter()
        .map(|c| {
            (
                c.id(),
                c.wait_with_output().unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .collect();
    let winners: Vec<u32> = outcomes
        .iter()
        .filter(|(_, o)| o.status.code() == Some(0))
        .map(|(pid, _)| *pid)
        .collect();
    let all: Vec<String> = outcomes
        .iter()
        .map(|(pid, o)| {
            format!(
                "{pid}: {:?} {}{}",
                o.status.code(),
                text(&o.stdout),
                text(&o.stderr)
            )
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{} applies acted:\n{}",
        winners.len(),
        all.join("\n")
    );
    let named = format!("the project is locked by `tend apply` (pid {})", winners[0]);
    for (_, out) in outcomes.iter().filter(|(_, o)| o.status.code() != Some(0)) {
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains(&named), "{}", text(&out.stderr));
    }
    assert_eq!(slots(&p.live()), ["0", "1", "2"]);
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let p = Project::new("it-closed-pipe", &sleeper(2, "1000", ""));
    p.ok(&["apply", "--yes"]);
    for args in [
        vec!["status"],
        vec!["plan"],
        vec!["validate"],
        vec!["graph"],
    ] {
        let mut child = spawn_tend(p.path(), &args, Stdio::piped);
        // The reader goes away before anything is written: `tend ... | head -0`.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "{args:?}");
    }
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_leaves_only_tagged_instances() {
    let spec = chain(
        2,
        3,
        r#"exec(command = ["sleep", "30"], grace_period = "0s", timeout = "60s")"#,
    );
    let p = Project::new("it-interrupt-twice", &spec);
    let child = spawn_tend(p.path(), &["apply", "--yes"], Stdio::piped);
    // Three instances wait for a health check that takes 30 s.
    wait_for(|| p.live().len() >= 3);
    let interrupt = || {
        signal(child.id(), "-INT");
    };
    interrupt();
    std::thread::sleep(Duration::from_millis(200));
    interrupt();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Stopping now: every instance made so far carries its tags."),
        "{stderr}"
    );
    // What it made is found by its tags: destroy removes every process.
    let made = p.live().len();
    assert!((3..6).contains(&made), "{made}");
    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains(&format!("{made} destroyed")), "{out}");
    assert!(p.live().is_empty());
}

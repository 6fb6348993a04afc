//! The docker provider against a real Docker Engine (started by `.ci/run`), and against
//! engines the tests start themselves when they must stop one: the engine a test did not
//! start is never stopped. In CI a missing engine fails these tests; elsewhere they say so
//! where a person sees it and return. They run one at a time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::examples::http_get;
use crate::harness::{repo, signal, skip, spawn_tend, text};
use crate::process::{wait_for, Project};

pub const IMAGE: &str = "tend-busybox:test";
/// Held by every test that uses an engine: they run one at a time.
pub static ENGINE: Mutex<()> = Mutex::new(());

fn docker(args: &[&str]) -> std::process::Output {
    docker_on(None, args)
}

/// `docker` against the engine at `host` (the default one when `None`).
fn docker_on(host: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new("docker");
    if let Some(host) = host {
        command.args(["--host", host]);
    }
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"))
}

fn engine_up_on(host: Option<&str>) -> bool {
    docker_on(host, &["info"]).status.success()
}

/// Builds the test image (`FROM scratch` + busybox) on the engine at `host`, unless it has it.
fn build_image(host: Option<&str>) {
    if docker_on(host, &["image", "inspect", IMAGE])
        .status
        .success()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        repo().join("testdata/docker/Dockerfile"),
        dir.path().join("Dockerfile"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .unwrap_or_else(|e| panic!("busybox-static: {e}"));
    let built = docker_on(
        host,
        &[
            "build",
            "-q",
            "-t",
            IMAGE,
            &dir.path().display().to_string(),
        ],
    );
    assert!(built.status.success(), "{}", text(&built.stderr));
}

/// True when the default engine answers (building the test image if needed); in CI, an
/// engine is required.
pub fn have_engine(test: &str) -> bool {
    if !engine_up_on(None) {
        skip(test, "no Docker engine (.ci/run starts dockerd)");
        return false;
    }
    build_image(None);
    true
}

/// A Docker engine of a test's own: its own socket, data, pid file, and a network
/// namespace of its own, so starting and stopping it touches nothing else on the machine.
/// Stopped by pid on drop.
pub struct OwnEngine {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Where it listens, as a `docker(host = ...)` setting.
    pub host: String,
}

impl OwnEngine {
    /// Starts one and builds the test image on it; `None` when `dockerd` is missing
    /// (outside CI).
    pub fn start(test: &str) -> Option<OwnEngine> {
        if Command::new("dockerd")
            .arg("--version")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            skip(test, "no dockerd to start an engine of the test's own");
            return None;
        }
        let dir = tempfile::tempdir_in("/tmp").unwrap_or_else(|e| panic!("{e}"));
        let host = format!("unix://{}/docker.sock", dir.path().display());
        let mut engine = OwnEngine {
            dir,
            child: None,
            host,
        };
        engine.run();
        build_image(Some(&engine.host));
        Some(engine)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts (or starts again) the engine and waits until it answers.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.path("dockerd.log")).unwrap_or_else(|e| panic!("{e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        // In a network namespace of its own: whatever it does to networking (without a
        // bridge it removes `docker0`) stays away from the machine's engine.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd", "--host", &self.host])
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("docker.pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dockerd: {e}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !engine_up_on(Some(&self.host)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the test's own dockerd did not come up: {}",
                std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the engine (SIGTERM to the dockerd this test started) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "-TERM");
            let _ = child.wait();
        }
    }

    /// The project's containers on this engine (`all`: stopped ones too).
    pub fn containers(&self, project: &str, all: bool) -> Vec<String> {
        containers_on(Some(&self.host), project, all)
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Remove what the tests left, then stop the engine; its folder goes with it.
            let ids = text(&docker_on(Some(&self.host), &["ps", "-aq"]).stdout);
            for id in ids.lines() {
                let _ = docker_on(Some(&self.host), &["rm", "-f", id]);
            }
        }
        self.stop();
    }
}

fn containers_on(host: Option<&str>, project: &str, all: bool) -> Vec<String> {
    let filter = format!("label=tend.project={project}");
    let mut args = vec!["ps", "-q", "--filter", filter.as_str()];
    if all {
        args.push("-a");
    }
    text(&docker_on(host, &args).stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn containers(project: &str, all: bool) -> Vec<String> {
    containers_on(None, project, all)
}

fn web(size: u32, extra: &str) -> String {
    format!(
        r#"group(
    name = "web",
    size = {size},
    provider = docker("{IMAGE}", ports = {{8080: "{{{{ 18201 + instance.index }}}}"}}),
    flavor = flavor(
        command = ["httpd", "-f", "-p", "8080", "-h", "/tend"{extra}],
        files = {{"index.html": "hello from {{{{ instance.id }}}}\n"}},
        health = http(port = "{{{{ 18201 + instance.index }}}}", grace_period = "10s"),
    ),
)
"#
    )
}

#[test]
fn containers_are_created_healed_rolled_scaled_and_destroyed() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine("docker::containers_are_created_healed_rolled_scaled_and_destroyed") {
        return;
    }
    let p = Project::new("it-docker", &web(2, ""));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 created"), "{out}");
    assert_eq!(
        http_get(18201, "/").ok().as_deref(),
        Some("hello from web-0\n")
    );
    assert_eq!(
        http_get(18202, "/").ok().as_deref(),
        Some("hello from web-1\n")
    );
    let names = text(
        &docker(&[
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            "label=tend.project=it-docker",
        ])
        .stdout,
    );
    assert!(
        names.lines().all(|n| n.starts_with("tend-it-docker-web-")),
        "{names}"
    );

    // Killed: the exited container stays, and the plan heals it.
    let victim = text(
        &docker(&[
            "ps",
            "-q",
            "--filter",
            "label=tend.project=it-docker",
            "--filter",
            "label=tend.slot=0",
        ])
        .stdout,
    );
    docker(&["kill", victim.trim()]);
    let plan = p.ok(&["plan"]);
    assert!(plan.starts_with("! heal    web/0 ("), "{plan}");
    // Healed by starting the same container again: nothing new is made.
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    assert!(
        out.contains(&format!("web/0 ({}) in place", victim.trim())),
        "{out}"
    );
    assert_eq!(containers("it-docker", true).len(), 2);
    assert!(containers("it-docker", false).contains(&victim.trim().to_owned()));
    assert!(http_get(18201, "/").is_ok());

    // Removed by hand: the slot is created again.
    let victim = text(
        &docker(&[
            "ps",
            "-q",
            "--filter",
            "label=tend.project=it-docker",
            "--filter",
            "label=tend.slot=1",
        ])
        .stdout,
    );
    let by_hand = text(&docker(&["inspect", "--format", "{{.Name}}", victim.trim()]).stdout);
    docker(&["rm", "-f", victim.trim()]);
    assert!(p.ok(&["apply", "--yes"]).contains("1 created"));
    assert_eq!(containers("it-docker", true).len(), 2);

    // A command change rolls both.
    p.write_spec(&web(2, r#", "-v""#));
    assert!(p.ok(&["apply", "--yes"]).contains("2 replaced"));
    assert!(http_get(18202, "/").is_ok());

    // Scale down, then destroy.
    p.write_spec(&web(1, r#", "-v""#));
    assert!(p.ok(&["apply", "--yes"]).contains("1 destroyed"));
    assert_eq!(containers("it-docker", true).len(), 1);
    assert!(p.ok(&["destroy", "--yes"]).contains("1 destroyed"));
    assert!(containers("it-docker", true).is_empty());
    // Every container tend removed took its mounted files with it; only the one removed
    // by hand, behind tend's back, left its folder.
    let mut left: Vec<String> = std::fs::read_dir(p.path().join(".tend/docker/files"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [by_hand.trim().trim_start_matches('/')]);
}

#[test]
fn a_missing_image_is_named_with_the_engine_and_never_pulled() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine("docker::a_missing_image_is_named_with_the_engine_and_never_pulled") {
        return;
    }
    let spec = r#"group(name = "app", size = 1, provider = docker("tend-missing:none"), flavor = flavor(command = ["true"]))
"#;
    let p = Project::new("it-docker-missing", spec);
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "image tend-missing:none is not on the Docker engine at unix:///var/run/docker.sock"
        ),
        "{stdout}"
    );
    assert!(
        !text(&docker(&["images", "-q", "tend-missing"]).stdout).contains(char::is_alphanumeric)
    );
}

#[test]
fn the_controller_waits_out_an_engine_restart_and_converges() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut engine) =
        OwnEngine::start("docker::the_controller_waits_out_an_engine_restart_and_converges")
    else {
        return;
    };
    let spec = format!(
        r#"group(name = "app", size = 2, provider = docker("{IMAGE}", host = "{}", network = "none"), flavor = flavor(command = ["sleep", "1000"]))
"#,
        engine.host
    );
    let p = Project::new("it-docker-restart", &spec);
    let run = spawn_tend(
        p.path(),
        &["run", "--listen", "127.0.0.1:19301", "--resync", "1s"],
        Stdio::null,
    );
    // Stopped by pid even when an assertion below fails.
    let _run = StopOnDrop(run);
    let converged = || {
        std::fs::read_to_string(p.path().join(".tend/controller.json"))
            .is_ok_and(|t| t.contains("\"converged\": true"))
    };
    wait_for(|| converged() && engine.containers("it-docker-restart", false).len() == 2);

    // The test's own engine goes away, then comes back.
    engine.stop();
    wait_for(|| http_get(19301, "/events").is_ok_and(|e| e.contains("cannot observe docker")));
    let status: serde_json::Value =
        serde_json::from_str(&http_get(19301, "/status").unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        status["groups"][0]["phase"]["phase"], "unobserved",
        "{status}"
    );
    engine.run();
    wait_for(|| engine.containers("it-docker-restart", false).len() == 2 && converged());
    let events = http_get(19301, "/events").unwrap_or_default();
    assert!(events.contains("providers answer again"), "{events}");
    drop(_run);
    let _ = p.tend(&["destroy", "--yes"]);
}

#[test]
fn destroy_plan_and_status_fail_while_an_engine_holding_instances_is_down() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut engine) = OwnEngine::start(
        "docker::destroy_plan_and_status_fail_while_an_engine_holding_instances_is_down",
    ) else {
        return;
    };
    let spec = format!(
        r#"group(name = "app", size = 2, provider = docker("{IMAGE}", host = "{}", network = "none"), flavor = flavor(command = ["sleep", "1000"]))
"#,
        engine.host
    );
    let p = Project::new("it-docker-down", &spec);
    p.ok(&["apply", "--yes"]);
    assert_eq!(engine.containers("it-docker-down", false).len(), 2);
    engine.stop();
    for args in [
        vec!["destroy", "--yes"],
        vec!["plan"],
        vec!["status"],
        vec!["apply", "--yes"],
    ] {
        let out = p.tend(&args);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}{stderr}",
            text(&out.stdout)
        );
        assert!(
            stderr.contains("cannot observe the docker provider, which may hold instances of project \"it-docker-down\""),
            "{args:?}: {stderr}"
        );
        assert!(!text(&out.stdout).contains("No changes"), "{args:?}");
    }
    // Nothing was lost: the engine comes back with both containers, and destroy works.
    engine.run();
    assert_eq!(engine.containers("it-docker-down", true).len(), 2);
    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains("2 destroyed"), "{out}");
    assert!(engine.containers("it-docker-down", true).is_empty());
}

#[test]
fn an_engine_named_by_the_spec_that_is_not_there_is_an_error_not_an_empty_project() {
    let spec = format!(
        r#"group(name = "app", size = 1, provider = docker("{IMAGE}", host = "unix:///nonexistent/tend-it/docker.sock"), flavor = flavor(command = ["sleep", "1000"]))
"#
    );
    let p = Project::new("it-docker-nowhere", &spec);
    for args in [vec!["plan"], vec!["status"], vec!["destroy", "--yes"]] {
        let out = p.tend(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot observe the docker provider")
                && stderr.contains("unix:///nonexistent/tend-it/docker.sock"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_group_moves_from_processes_to_containers_and_back() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine("docker::a_group_moves_from_processes_to_containers_and_back") {
        return;
    }
    let on = |provider: &str| {
        format!(
            r#"group(name = "work", size = 2, provider = {provider}, flavor = flavor(command = ["sleep", "1000"]), update = rolling(max_unavailable = 1))
"#
        )
    };
    let p = Project::new("it-docker-move", &on("process()"));
    p.ok(&["apply", "--yes"]);
    assert_eq!(p.live().len(), 2);

    p.write_spec(&on(&format!("docker(\"{IMAGE}\")")));
    let plan = p.ok(&["plan"]);
    assert!(plan.contains("moves from process to docker"), "{plan}");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 replaced"), "{out}");
    assert!(
        p.live().is_empty(),
        "process instances left: {:?}",
        p.live()
    );
    assert_eq!(containers("it-docker-move", false).len(), 2);
    assert!(p
        .ok(&["plan"])
        .starts_with("No changes: 2 instances match the spec."));

    p.write_spec(&on("process()"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("2 replaced"), "{out}");
    assert_eq!(p.live().len(), 2);
    assert!(containers("it-docker-move", true).is_empty());
    assert!(p
        .ok(&["plan"])
        .starts_with("No changes: 2 instances match the spec."));
}

/// A child process sent SIGTERM and waited for when dropped.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        signal(self.0.id(), "-TERM");
        let _ = self.0.wait();
    }
}

#[test]
fn a_secret_file_reaches_the_container_and_not_its_configuration() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine("docker::a_secret_file_reaches_the_container_and_not_its_configuration") {
        return;
    }
    let secret = format!("s3cr3t-docker-{}", std::process::id());
    let spec = format!(
        r#"group(name = "api", size = 1, provider = docker("{IMAGE}"), flavor = flavor(command = ["sleep", "1000"], secret_files = {{"token": secret("TEND_IT_DOCKER_SECRET")}}))
"#
    );
    let p = Project::new("it-docker-secret", &spec);
    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["apply", "--yes"])
        .current_dir(p.path())
        .env("TEND_IT_DOCKER_SECRET", &secret)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let ids = containers("it-docker-secret", false);
    assert_eq!(ids.len(), 1);
    let read = docker(&["exec", &ids[0], "cat", "/tend/token"]);
    assert_eq!(text(&read.stdout), secret);
    let inspect = text(&docker(&["inspect", &ids[0]]).stdout);
    assert!(
        !inspect.contains(&secret),
        "docker inspect shows the secret"
    );
    for file in p.state_files() {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&secret),
            "{}",
            file.display()
        );
    }
    p.ok(&["destroy", "--yes"]);
    assert!(containers("it-docker-secret", true).is_empty());
}

#[test]
fn resources_reach_the_engine_and_an_oom_kill_is_reported() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine("docker::resources_reach_the_engine_and_an_oom_kill_is_reported") {
        return;
    }
    let spec = format!(
        r#"group(name = "api", size = 1, provider = docker("{IMAGE}"),
      flavor = flavor(command = ["sleep", "1000"], resources = resources(memory = "64M", cpu = 0.5, pids = 64)))
group(name = "hog", size = 1, provider = docker("{IMAGE}"),
      flavor = flavor(command = ["awk", "BEGIN {{ s = sprintf(\"%67108864s\", \"\"); print length(s) }}"],
                      resources = resources(memory = "16M"),
                      health = exec(command = ["sleep", "3"], grace_period = "0s")))
"#
    );
    let p = Project::new("it-docker-resources", &spec);
    // The hog dies of its limit once it allocates; apply says so and exits 1. Its check
    // takes 3 s to pass, so apply waits for the death however slow the machine is.
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let ids = containers("it-docker-resources", true);
    let limits = |id: &str| {
        text(
            &docker(&[
                "inspect",
                "--format",
                "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}",
                id,
            ])
            .stdout,
        )
        .trim()
        .to_owned()
    };
    assert!(
        ids.iter()
            .any(|id| limits(id) == "67108864 67108864 500000000 64"),
        "{:?}",
        ids.iter().map(|id| limits(id)).collect::<Vec<_>>()
    );
    let status = p.ok(&["status"]);
    assert!(
        status.contains("oom: killed for going over its memory limit"),
        "{status}"
    );
    p.ok(&["destroy", "--yes"]);
    assert!(containers("it-docker-resources", true).is_empty());
}

/// The project's containers in `slot`, running or not.
fn in_slot(project: &str, slot: &str) -> Vec<String> {
    let project = format!("label=tend.project={project}");
    let slot = format!("label=tend.slot={slot}");
    text(&docker(&["ps", "-aq", "--filter", &project, "--filter", &slot]).stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The one container of `slot` once it is not `other`.
fn one_other_than(project: &str, slot: &str, other: &str) -> String {
    let mut found = String::new();
    wait_for(|| match in_slot(project, slot).as_slice() {
        [one] if one != other => {
            found.clone_from(one);
            true
        }
        _ => false,
    });
    found
}

#[test]
fn a_killed_container_is_started_again_in_place_and_serves_behind_its_balancer() {
    use crate::run::{converged, Running};
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine(
        "docker::a_killed_container_is_started_again_in_place_and_serves_behind_its_balancer",
    ) {
        return;
    }
    let lb = 19741;
    let spec = format!(
        r#"group(
    name = "web",
    size = 2,
    provider = docker("{IMAGE}"),
    flavor = flavor(
        command = ["httpd", "-f", "-p", "{{{{ instance.ports.http }}}}", "-h", "/tend"],
        files = {{"index.html": "hello from {{{{ instance.id }}}}\n"}},
        ports = ["http"],
        health = http(port = "http", grace_period = "10s", interval = "300ms"),
    ),
    expose = balancer(port = {lb}),
)
"#
    );
    let p = Project::new("it-docker-in-place", &spec);
    let run = Running::start(&p, 19742, &["--ports", "24700-24799"]);
    wait_for(|| converged(&p) && containers("it-docker-in-place", false).len() == 2);
    let mut before = containers("it-docker-in-place", true);
    before.sort();
    let victim = one_other_than("it-docker-in-place", "0", "");
    let label = |id: &str| {
        text(
            &docker(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"tend.ports\"}}",
                id,
            ])
            .stdout,
        )
    };
    let ports = label(&victim);
    docker(&["kill", &victim]);
    wait_for(|| run.events("healed") == 1);
    let events = run.get("/events");
    assert!(
        events.contains(&format!("{victim} started again in place")),
        "{events}"
    );
    // The same container runs again, with its own port; no other was made.
    let mut after = containers("it-docker-in-place", true);
    after.sort();
    assert_eq!(after, before);
    assert!(containers("it-docker-in-place", false).contains(&victim));
    assert_eq!(label(&victim), ports);
    // Back in its balancer's rotation: both instances answer there.
    wait_for(|| converged(&p));
    let mut answers = std::collections::BTreeSet::new();
    wait_for(|| {
        if let Ok(body) = http_get(lb, "/") {
            answers.insert(body);
        }
        answers.len() == 2
    });
    assert!(answers.contains("hello from web-0\n"), "{answers:?}");
    drop(run);
    p.ok(&["destroy", "--yes"]);
    assert!(containers("it-docker-in-place", true).is_empty());
}

#[test]
fn a_container_that_keeps_dying_in_place_is_replaced_by_a_new_one() {
    use crate::run::Running;
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine("docker::a_container_that_keeps_dying_in_place_is_replaced_by_a_new_one") {
        return;
    }
    let spec = format!(
        r#"group(name = "app", size = 1, provider = docker("{IMAGE}", network = "none"), flavor = flavor(command = ["sh", "-c", "sleep 2; exit 1"]))
"#
    );
    let p = Project::new("it-docker-renew", &spec);
    let run = Running::start(&p, 19743, &[]);
    let first = one_other_than("it-docker-renew", "0", "");
    let in_place = |id: &str| {
        let line = format!("{id} started again in place");
        run.get("/events").matches(&line).count()
    };
    // Its first death is healed in place; it dies again before it holds, so the next heal
    // makes a new container and removes the one that kept failing.
    let second = one_other_than("it-docker-renew", "0", &first);
    assert_eq!(in_place(&first), 1, "{}", run.get("/events"));
    // Until an instance of the slot holds, its heals keep making new ones.
    one_other_than("it-docker-renew", "0", &second);
    assert_eq!(in_place(&second), 0, "{}", run.get("/events"));
    drop(run);
    p.ok(&["destroy", "--yes"]);
    assert!(containers("it-docker-renew", true).is_empty());
}

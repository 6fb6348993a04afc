//! The docker provider against a real Docker Engine (started by `.ci/run`). In CI a missing
//! engine fails these tests; elsewhere they say so and return. They run one at a time: one
//! of them restarts the engine.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::examples::http_get;
use crate::harness::{repo, text};
use crate::process::{wait_for, Project};

pub const IMAGE: &str = "tend-busybox:test";
/// Held by every test that uses the engine: one of them restarts it.
pub static ENGINE: Mutex<()> = Mutex::new(());

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"))
}

fn engine_up() -> bool {
    Command::new("docker")
        .args(["info"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when an engine answers (building the test image if needed); in CI, an engine is
/// required.
pub fn have_engine() -> bool {
    if !engine_up() {
        assert!(
            std::env::var("CI").is_err(),
            "no Docker engine: .ci/run starts dockerd, and CI requires it"
        );
        eprintln!("skipping: no Docker engine");
        return false;
    }
    if !docker(&["image", "inspect", IMAGE]).status.success() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(
            repo().join("testdata/docker/Dockerfile"),
            dir.path().join("Dockerfile"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy("/bin/busybox", dir.path().join("busybox"))
            .unwrap_or_else(|e| panic!("busybox-static: {e}"));
        let built = docker(&[
            "build",
            "-q",
            "-t",
            IMAGE,
            &dir.path().display().to_string(),
        ]);
        assert!(built.status.success(), "{}", text(&built.stderr));
    }
    true
}

fn containers(project: &str, all: bool) -> Vec<String> {
    let filter = format!("label=tend.project={project}");
    let mut args = vec!["ps", "-q", "--filter", filter.as_str()];
    if all {
        args.push("-a");
    }
    text(&docker(&args).stdout)
        .lines()
        .map(str::to_owned)
        .collect()
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
    if !have_engine() {
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
    assert!(p.ok(&["apply", "--yes"]).contains("1 healed"));
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
}

#[test]
fn a_missing_image_is_named_with_the_engine_and_never_pulled() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine() {
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

fn dockerd_pid() -> Option<u32> {
    std::fs::read_to_string("/var/run/docker.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn the_controller_waits_out_an_engine_restart_and_converges() {
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine() {
        return;
    }
    let spec = format!(
        r#"group(name = "app", size = 2, provider = docker("{IMAGE}"), flavor = flavor(command = ["sleep", "1000"]))
"#
    );
    let p = Project::new("it-docker-restart", &spec);
    let run = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["run", "--listen", "127.0.0.1:19301", "--resync", "1s"])
        .current_dir(p.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Stopped by pid even when an assertion below fails.
    let _run = StopOnDrop(run);
    let converged = || {
        std::fs::read_to_string(p.path().join(".tend/controller.json"))
            .is_ok_and(|t| t.contains("\"phase\": \"converged\""))
    };
    wait_for(|| converged() && containers("it-docker-restart", false).len() == 2);

    // Stop the engine (the one .ci/run started, by its pid), then start a new one.
    let pid = dockerd_pid().unwrap_or_else(|| panic!("no /var/run/docker.pid"));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    wait_for(|| !engine_up());
    // dockerd removes its pid file last, when it has shut down.
    wait_for(|| !std::path::Path::new("/var/run/docker.pid").exists());
    wait_for(|| http_get(19301, "/events").is_ok_and(|e| e.contains("cannot observe")));
    let log = std::fs::File::create(std::env::temp_dir().join("tend-it-dockerd.log"))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::process::CommandExt;
    // The new engine replaces the one .ci/run started and must outlive this test, for the
    // Docker tests after it; it is never waited for here on purpose.
    #[allow(clippy::zombie_processes)]
    Command::new("dockerd")
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dockerd: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !engine_up() {
        assert!(
            std::time::Instant::now() < deadline,
            "dockerd did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(|| containers("it-docker-restart", false).len() == 2 && converged());
    let events = http_get(19301, "/events").unwrap_or_default();
    assert!(events.contains("providers answer again"), "{events}");
}

/// A child process sent SIGTERM and waited for when dropped.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

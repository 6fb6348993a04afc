//! Every example under `examples/` that runs real processes is applied, checked and
//! destroyed here, under a project name of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{repo, signal};
use crate::process::{wait_for, Project};

/// The body of `GET path` on 127.0.0.1:`port`, or the error.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    if !answer.starts_with("HTTP/1.0 200") && !answer.starts_with("HTTP/1.1 200") {
        return Err(answer.lines().next().unwrap_or("").to_owned());
    }
    Ok(answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

/// The example's spec under a test project name.
fn example(name: &str) -> Project {
    let path = repo().join("examples").join(name).join("main.star");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let original = format!("project(name = {name:?})\n");
    assert!(text.contains(&original), "{name} does not name its project");
    let renamed = format!("it-example-{name}");
    Project::new(&renamed, &text.replace(&original, ""))
}

/// True when `program` can be run; in CI a missing program fails the test.
fn have(program: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        crate::harness::skip(
            &format!("examples ({program})"),
            &format!("{program} is not installed"),
        );
    }
    found
}

#[test]
fn hello_serves_three_pages() {
    let p = example("hello");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("3 created"), "{out}");
    for port in [8001, 8002, 8003] {
        let page = http_get(port, "/").unwrap_or_else(|e| panic!("port {port}: {e}"));
        assert!(page.contains("Directory listing"), "{page}");
    }
}

#[test]
fn multi_tier_renders_the_db_addresses_into_the_api() {
    let p = example("multi-tier");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("5 created"), "{out}");
    for (port, index) in [(7201, 0), (7202, 1)] {
        let page = http_get(port, "/").unwrap_or_else(|e| panic!("port {port}: {e}"));
        assert_eq!(
            page,
            format!("api {index} uses db at 127.0.0.1:7101,127.0.0.1:7102\n")
        );
    }
    assert!(http_get(7301, "/").is_ok());
    let graph = p.ok(&["graph"]);
    assert!(
        graph.contains("\"db\" -> \"api\" [style=dashed, label=\"reads\"];"),
        "{graph}"
    );
    assert!(graph.contains("\"api\" -> \"web\";"), "{graph}");
}

#[test]
fn etcd_cluster_forms_and_heals_a_member() {
    if !have("etcd") {
        return;
    }
    let p = example("etcd-cluster");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("3 created"), "{out}");
    for port in [12379, 12389, 12399] {
        let health = http_get(port, "/health").unwrap_or_else(|e| panic!("port {port}: {e}"));
        assert!(health.contains("\"health\":\"true\""), "{health}");
    }
    let member_b = p
        .live()
        .into_iter()
        .find(|l| l.slot == "b")
        .map(|l| l.pid)
        .unwrap_or_default();
    signal(member_b, "-9");
    wait_for(|| !p.live().iter().any(|l| l.pid == member_b));
    let plan = p.ok(&["plan"]);
    assert!(plan.starts_with("! heal    etcd/b ("), "{plan}");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    let health = http_get(12389, "/health").unwrap_or_else(|e| panic!("{e}"));
    assert!(health.contains("\"health\":\"true\""), "{health}");
}

#[test]
fn docker_web_serves_a_page_per_container() {
    let _engine = crate::docker::ENGINE
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if !crate::docker::have_engine("examples::docker_web_serves_a_page_per_container") {
        return;
    }
    let p = example("docker-web");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("3 created"), "{out}");
    for (port, id) in [(18301, "web-0"), (18302, "web-1"), (18303, "web-2")] {
        assert_eq!(http_get(port, "/").ok(), Some(format!("<h1>{id}</h1>\n")));
    }
}

#[test]
fn terraform_serves_three_pages_through_a_real_terraform() {
    if !crate::terraform::have_terraform(
        "examples::terraform_serves_three_pages_through_a_real_terraform",
    ) {
        return;
    }
    let p = example("terraform");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("3 created"), "{out}");
    for port in [8301, 8302, 8303] {
        let page = http_get(port, "/").unwrap_or_else(|e| panic!("port {port}: {e}"));
        assert!(page.contains("Directory listing"), "{page}");
    }
    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains("3 destroyed"), "{out}");
    assert!(http_get(8301, "/").is_err(), "a server outlived destroy");
}

#[test]
fn vagrant_serves_a_page_per_machine() {
    let _engine = crate::docker::ENGINE
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if !crate::vagrant::have_vagrant("examples::vagrant_serves_a_page_per_machine") {
        return;
    }
    let p = example("vagrant");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("3 created"), "{out}");
    for (port, id) in [(18401, "web-0"), (18402, "web-1"), (18403, "web-2")] {
        assert_eq!(
            http_get(port, "/").ok(),
            Some(format!("<p>{id}, made by Vagrant</p>\n"))
        );
    }
}

#[test]
fn ha_script_shows_a_standby_taking_over_and_leaves_nothing_running() {
    let _quiet = crate::harness::QUIET
        .write()
        .unwrap_or_else(|p| p.into_inner());
    if !crate::etcd::have("etcd") || !crate::etcd::have("etcdctl") {
        crate::harness::skip(
            "examples::ha_script_shows_a_standby_taking_over_and_leaves_nothing_running",
            "etcd and etcdctl are not installed",
        );
        return;
    }
    let out = std::process::Command::new("bash")
        .arg(repo().join("examples/ha/run.sh"))
        .arg("demo")
        .env("TEND", env!("CARGO_BIN_EXE_tend"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid_after = |prefix: &str| -> u32 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{stdout}"))
    };
    let killed = pid_after("kill -9 ");
    let next = pid_after("new leader: pid ");
    assert_ne!(killed, next);
    let took: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split(", ")
                .nth(1)?
                .strip_suffix("s after the kill (the lease's TTL is 10s)")
        })
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(took <= 12.0, "took over {took}s after the kill:\n{stdout}");
    assert!(
        stdout.contains(&format!("leader: `tend run` (pid {next} on ")),
        "{stdout}"
    );
    // Two standbys before the kill, one after.
    assert_eq!(
        stdout.matches(": standby, has seen serial").count(),
        3,
        "{stdout}"
    );
    // Everything it started is gone: three etcd members and three replicas.
    let started: Vec<u32> = stdout
        .lines()
        .filter_map(|l| {
            l.split("(pids ")
                .nth(1)
                .or_else(|| l.strip_prefix("replicas: pids "))
        })
        .flat_map(|rest| {
            rest.split([' ', ')', ','])
                .map_while(|w| w.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(started.len(), 6, "{stdout}");
    for pid in started {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "pid {pid} still runs"
        );
    }
}

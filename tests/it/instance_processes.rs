//! An instance is all of its processes: what a dead instance leaves behind is stopped
//! before its slot is healed, destroy stops children and grandchildren whatever process
//! group or session they made, and `resources()` limits hold (an instance over its memory
//! limit is killed and reported `oom`). Real processes; the project's `Drop` checks the
//! process table for the project's tags.

use std::process::Stdio;

use crate::examples::http_get;
use crate::harness::{in_ci, signal, skip, spawn_tend, text};
use crate::process::{live_tagged, wait_for, Project};

/// True when process `pid` is in one of tend's cgroups; outside CI, a test that needs
/// cgroups is skipped (said on stderr) when the machine does not let tend make them.
fn in_tend_cgroup(test: &str, pid: u32) -> bool {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if cgroups.lines().any(|l| l.contains("/tend/")) {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: instances get no cgroup here, and CI must have them:\n{cgroups}"
    );
    skip(test, "tend cannot make cgroups on this machine");
    false
}

/// True when tend can hold an instance to `resources()` here; outside CI, a test that needs
/// limits is skipped (said on stderr) when it cannot. Tried with a real instance of a
/// project of its own, `name`.
fn limits_hold(test: &str, name: &str) -> bool {
    let probe = Project::new(
        name,
        r#"group(name = "w", size = 1, provider = process(),
      flavor = flavor(command = ["sleep", "1000"], resources = resources(memory = "64M")))
"#,
    );
    let out = probe.tend(&["apply", "--yes"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if out.status.success() {
        return true;
    }
    assert!(said.contains("cgroup controller"), "{test}: {said}");
    assert!(
        !in_ci(),
        "{test}: tend cannot enforce limits here, and CI must: {said}"
    );
    skip(test, "tend cannot enforce resources() on this machine");
    false
}

/// The pid of the process of `project` whose command line contains `marker`.
fn process_with(project: &str, marker: &str) -> Option<u32> {
    live_tagged(project).into_iter().map(|l| l.pid).find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(marker))
            .unwrap_or(false)
    })
}

#[test]
fn a_leftover_holding_the_port_is_stopped_before_the_heal() {
    // A wrapper that does not `exec`: killing it leaves the server holding the port.
    let port = 19411;
    let p = Project::new(
        "it-leftover-port",
        &format!(
            r#"group(name = "web", size = 1, provider = process(),
      flavor = flavor(command = ["sh", "-c", "python3 -m http.server {port} --bind 127.0.0.1; : wrapper"],
                      health = http(port = {port}, path = "/", grace_period = "30s", interval = "100ms")))
"#
        ),
    );
    p.ok(&["apply", "--yes"]);
    let wrapper = p.live().iter().find(|l| l.slot == "0").map(|l| l.pid);
    let server = process_with(&p.name, "http.server");
    let (Some(wrapper), Some(server)) = (wrapper, server) else {
        panic!("no wrapper and server: {:?}", p.live());
    };
    assert!(http_get(port, "/").is_ok());
    signal(wrapper, "-9");
    wait_for(|| !p.live().iter().any(|l| l.pid == wrapper));
    // The dead instance still holds its port through the server it started.
    let status = p.ok(&["status"]);
    assert!(status.contains("1 process left running"), "{status}");
    let plan = p.ok(&["plan"]);
    assert!(plan.starts_with("! heal    web/0 ("), "{plan}");
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("1 healed"),
        "{}",
        text(&out.stdout)
    );
    // The old server is gone and a new one answers on the same port.
    assert!(!live_tagged(&p.name).iter().any(|l| l.pid == server));
    let new_server = process_with(&p.name, "http.server");
    assert!(new_server.is_some_and(|s| s != server));
    assert!(http_get(port, "/").is_ok());
}

#[test]
fn destroy_stops_children_in_their_own_process_group_and_grandchildren() {
    let p = Project::new(
        "it-process-tree",
        r#"group(name = "tree", size = 2, provider = process(),
      flavor = flavor(command = ["sh", "-c", "python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(1001)' & sh -c 'sleep 1002; :' & wait"]))
"#,
    );
    p.ok(&["apply", "--yes"]);
    // Per instance: the shell, a python in a process group of its own, and a shell with
    // its own sleep.
    wait_for(|| p.live().len() == 8);
    // A child in a process group of its own, in its instance's session.
    wait_for(|| {
        live_tagged(&p.name).into_iter().any(|l| {
            engine::procfs::stat(l.pid)
                .is_some_and(|s| s.pgrp == l.pid as i32 && s.session != l.pid as i32)
        })
    });
    let out = p.ok(&["destroy", "--yes"]);
    assert!(out.contains("2 destroyed"), "{out}");
    assert_eq!(p.live(), Vec::new());
}

#[test]
fn a_child_that_leaves_its_session_is_still_part_of_the_instance() {
    let p = Project::new(
        "it-escaped-session",
        r#"group(name = "w", size = 1, provider = process(),
      flavor = flavor(command = ["sh", "-c", "setsid sleep 1003 & sleep 1004"]))
"#,
    );
    p.ok(&["apply", "--yes"]);
    wait_for(|| process_with(&p.name, "1003").is_some());
    let leader = p.live().iter().map(|l| l.pid).min().unwrap_or(0);
    if !in_tend_cgroup(
        "a_child_that_leaves_its_session_is_still_part_of_the_instance",
        leader,
    ) {
        return;
    }
    let escaped = process_with(&p.name, "1003").unwrap_or(0);
    let session = engine::procfs::stat(escaped)
        .map(|s| s.session)
        .unwrap_or(0);
    assert_eq!(
        session, escaped as i32,
        "the child did not start its own session"
    );
    // Its leader dies: what it left shows, and the heal stops it first.
    signal(leader, "-9");
    wait_for(|| !p.live().iter().any(|l| l.pid == leader));
    let status = p.ok(&["status"]);
    assert!(status.contains("processes left running"), "{status}");
    p.ok(&["apply", "--yes"]);
    assert!(!live_tagged(&p.name).iter().any(|l| l.pid == escaped));
    p.ok(&["destroy", "--yes"]);
    assert_eq!(p.live(), Vec::new());
}

#[test]
fn an_instance_over_its_memory_limit_is_killed_and_reported_oom() {
    let test = "instance_processes::an_instance_over_its_memory_limit_is_killed_and_reported_oom";
    if !limits_hold(test, "it-oom-probe") {
        return;
    }
    let p = Project::new(
        "it-oom",
        r#"group(name = "hog", size = 1, provider = process(),
      flavor = flavor(command = ["python3", "-c", "import time; time.sleep(0.5); b = bytearray(256 << 20); time.sleep(1000)"],
                      resources = resources(memory = "48M", pids = 16)))
"#,
    );
    let listen = "127.0.0.1:19297";
    let mut run = spawn_tend(
        p.path(),
        &["run", "--listen", listen, "--resync", "1s"],
        Stdio::null,
    );
    let events = || http_get(19297, "/events").unwrap_or_default();
    wait_for(|| events().contains("killed for going over its memory limit (oom)"));
    let seen = events();
    assert!(
        seen.contains("is gone (oom: killed for going over its memory limit)"),
        "{seen}"
    );
    signal(run.id(), "-TERM");
    let _ = run.wait();
    // With no controller, the instance there now goes over its limit too, and stays dead:
    // the status says why.
    wait_for(|| {
        p.ok(&["status"])
            .contains("dead      oom: killed for going over its memory limit")
    });
}

#[test]
fn resources_without_cgroups_are_refused_not_ignored() {
    let p = Project::new(
        "it-no-cgroups",
        r#"group(name = "w", size = 1, provider = process(cgroups = False),
      flavor = flavor(command = ["sleep", "1000"], resources = resources(memory = "64M")))
"#,
    );
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("asks for resources(), which need cgroups: this group's provider is process(cgroups = False)"),
        "{shown}"
    );
    assert_eq!(p.live(), Vec::new());
}

#[test]
fn leftovers_no_record_names_are_found_by_their_tags_and_reaped() {
    let p = Project::new(
        "it-leftover-unrecorded",
        r#"group(name = "w", size = 1, provider = process(),
      flavor = flavor(command = ["sh", "-c", "sleep 1005; : wrapper"]))
"#,
    );
    p.ok(&["apply", "--yes"]);
    wait_for(|| process_with(&p.name, "sleep").is_some());
    let child = process_with(&p.name, "sleep").unwrap_or(0);
    let leader = p.live().iter().map(|l| l.pid).min().unwrap_or(0);
    signal(leader, "-9");
    wait_for(|| !p.live().iter().any(|l| l.pid == leader));
    // Nothing on disk remembers the instance: its tags on the leftover still do.
    std::fs::remove_dir_all(p.path().join(".tend")).unwrap_or_else(|e| panic!("{e}"));
    let status = p.ok(&["status"]);
    assert!(status.contains("1 process left running"), "{status}");
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("1 healed"), "{out}");
    assert!(!live_tagged(&p.name).iter().any(|l| l.pid == child));
    assert_eq!(p.live().len(), 2, "{:?}", p.live());
}

/// The value of `file` in the cgroup folder of `pid` that has it (v2 or a v1 hierarchy).
fn cgroup_value(pid: u32, files: &[&str]) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in text.lines().filter(|l| l.contains("/tend/")) {
        let path = line.splitn(3, ':').nth(2)?;
        for mount in mounts.lines().filter(|m| m.contains(" - cgroup")) {
            let point = mount.split(' ').nth(4)?;
            for file in files {
                let at = format!("{point}{path}/{file}");
                if let Ok(value) = std::fs::read_to_string(&at) {
                    return Some(value.trim().to_owned());
                }
            }
        }
    }
    None
}

#[test]
fn limits_are_written_to_the_instance_cgroups() {
    if !limits_hold(
        "instance_processes::limits_are_written_to_the_instance_cgroups",
        "it-limits-probe",
    ) {
        return;
    }
    let p = Project::new(
        "it-limits",
        r#"group(name = "w", size = 1, provider = process(),
      flavor = flavor(command = ["sleep", "1000"], resources = resources(memory = "64M", cpu = 0.5, pids = 32)))
"#,
    );
    p.ok(&["apply", "--yes"]);
    let pid = p.live()[0].pid;
    if !in_tend_cgroup("limits_are_written_to_the_instance_cgroups", pid) {
        return;
    }
    assert_eq!(
        cgroup_value(pid, &["memory.max", "memory.limit_in_bytes"]).as_deref(),
        Some("67108864")
    );
    assert_eq!(cgroup_value(pid, &["pids.max"]).as_deref(), Some("32"));
    let cpu = cgroup_value(pid, &["cpu.max", "cpu.cfs_quota_us"]).unwrap_or_default();
    assert!(cpu == "50000" || cpu == "50000 100000", "{cpu}");
    p.ok(&["destroy", "--yes"]);
}

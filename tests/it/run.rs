//! `tend run` with real processes: healing deaths and failed health checks, backing off a
//! crash loop, rolling a changed spec, resuming after a SIGKILL, and its HTTP endpoint.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::examples::http_get;
use crate::harness::{signal, spawn_tend, text};
use crate::process::{wait_for, Project};

/// A running `tend run`, stopped with SIGTERM when dropped.
pub struct Running {
    child: Option<Child>,
    port: u16,
}

impl Running {
    pub fn start(p: &Project, port: u16, extra: &[&str]) -> Running {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["run", "--listen", listen.as_str(), "--resync", "2s"];
        args.extend_from_slice(extra);
        let child = spawn_tend(p.path(), &args, Stdio::null);
        let running = Running {
            child: Some(child),
            port,
        };
        wait_for(|| http_get(port, "/healthz").is_ok());
        running
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The body of `GET path` on the controller's endpoint.
    pub fn get(&self, path: &str) -> String {
        http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The controller's last round (`null` until it has one).
    pub fn status(&self) -> serde_json::Value {
        http_get(self.port, "/status")
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// How many events of `kind` the controller told so far.
    pub fn events(&self, kind: &str) -> usize {
        self.get("/events")
            .lines()
            .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
            .count()
    }

    /// SIGKILL, as a crash would.
    fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    /// SIGTERM: running actions finish; when they take long, a second SIGTERM stops it at
    /// once.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let term = || {
                signal(&pid, "-TERM");
            };
            term();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait().ok().flatten().is_none() {
                term();
            }
            let _ = child.wait();
        }
    }
}

/// True once the controller of `p` reported its spec converged.
pub fn converged(p: &Project) -> bool {
    std::fs::read_to_string(p.path().join(".tend/controller.json"))
        .is_ok_and(|t| t.contains("\"converged\": true"))
}

#[test]
fn a_killed_instance_is_replaced_and_stopping_leaves_instances_running() {
    let spec = r#"group(name = "work", size = 3, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#;
    let p = Project::new("it-run-heal", spec);
    let run = Running::start(&p, 19281, &[]);
    wait_for(|| p.live().len() == 3 && converged(&p));
    let victim = p.live()[1].clone();
    signal(victim.pid, "-9");
    wait_for(|| {
        let live = p.live();
        live.len() == 3 && !live.iter().any(|l| l.pid == victim.pid)
    });
    assert!(p.live().iter().any(|l| l.slot == victim.slot));
    wait_for(|| run.events("healed") == 1);
    // A round may see the replacement before the heal removed the dead instance; the one
    // after the heal finished sees only the three.
    wait_for(|| {
        let metrics = run.get("/metrics");
        metrics.contains("tend_instances{group=\"work\",state=\"running\"} 3\n")
            && !metrics.contains("state=\"dead\"")
    });
    let metrics = run.get("/metrics");
    assert!(metrics.contains("tend_heals_total 1\n"), "{metrics}");
    let pid = run.pid();
    drop(run);
    // Stopped cleanly: instances run on, the lock and the report are gone.
    assert_eq!(p.live().len(), 3);
    let lock = std::fs::File::open(p.path().join(".tend/lock")).unwrap_or_else(|e| panic!("{e}"));
    assert!(lock.try_lock().is_ok(), "the lock is still held");
    assert!(!p.path().join(".tend/controller.json").exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

use std::path::Path;

#[test]
fn an_instance_failing_its_health_check_is_replaced_after_its_threshold() {
    // The grace period covers a slow start (however loaded the machine); once the
    // instance passed, failures count at once.
    let spec = r#"group(
    name = "web",
    size = 1,
    provider = process(),
    flavor = flavor(
        command = ["python3", "-m", "http.server", "17401", "--bind", "127.0.0.1"],
        files = {"ok": "yes"},
        health = http(port = 17401, path = "/ok", grace_period = "60s", interval = "200ms", failures = 2),
    ),
)
"#;
    let p = Project::new("it-run-health", spec);
    let run = Running::start(&p, 19282, &[]);
    wait_for(|| converged(&p) && http_get(17401, "/ok").is_ok());
    let first = p.live()[0].pid;
    // The instance's working folder, where its files are.
    let workdir =
        std::fs::read_link(format!("/proc/{first}/cwd")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(workdir.join("ok")).unwrap_or_else(|e| panic!("{e}"));
    wait_for(|| p.live().first().is_some_and(|l| l.pid != first) && http_get(17401, "/ok").is_ok());
    wait_for(|| run.events("healed") >= 1);
    assert_eq!(run.events("unhealthy"), 1);
}

#[test]
fn a_crash_loop_backs_off_and_the_group_is_marked_failing() {
    // How many attempts in how long is the simulation's business (virtual time); here the
    // real thing must end up failing, with the reason shown.
    let spec = r#"group(name = "broken", size = 1, provider = process(), flavor = flavor(command = ["false"]))
"#;
    let p = Project::new("it-run-crashloop", spec);
    let run = Running::start(&p, 19283, &[]);
    wait_for_long(|| {
        run.status()["groups"][0]["failing"]
            .as_str()
            .is_some_and(|f| f.contains("failures in a row; retrying every 300s"))
    });
    let status = run.status();
    assert!(
        status["groups"][0]["backoff"]["0"]
            .as_str()
            .is_some_and(|b| b.contains("exited right after it started")),
        "{status}"
    );
    assert_eq!(status["groups"][0]["phase"]["phase"], "failing", "{status}");
    let shown = p.ok(&["status"]);
    assert!(shown.contains("FAILING:"), "{shown}");
    assert!(run.events("failed") >= 5);
}

/// Waits up to 120 s for `condition`: for what takes a backoff or two.
fn wait_for_long(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rolling_spec(arg: &str) -> String {
    format!(
        r#"group(
    name = "work",
    size = 4,
    provider = process(),
    flavor = flavor(command = ["sleep", "{arg}"], health = exec(command = ["sleep", "0.3"], grace_period = "0s")),
    update = rolling(max_unavailable = 1),
)
"#
    )
}

#[test]
fn apply_hands_a_new_spec_to_the_controller_and_waits_for_it() {
    let p = Project::new("it-run-apply", &rolling_spec("1000"));
    let _run = Running::start(&p, 19284, &[]);
    wait_for(|| p.live().len() == 4 && converged(&p));
    let old = p.live()[0].hash.clone();
    p.write_spec(&rolling_spec("1001"));
    let out = p.ok(&["apply", "--yes"]);
    assert!(
        out.contains("keeps this project: handed it serial 2; following it."),
        "{out}"
    );
    assert!(out.contains("Serial 2 converged."), "{out}");
    let live = p.live();
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|l| l.hash != old), "{live:?}");
}

#[test]
fn a_controller_killed_mid_rollout_resumes_it_when_restarted() {
    let p = Project::new("it-run-resume", &rolling_spec("1000"));
    let run = Running::start(&p, 19285, &[]);
    wait_for(|| p.live().len() == 4 && converged(&p));
    let old = p.live()[0].hash.clone();
    p.write_spec(&rolling_spec("1001"));
    let apply = spawn_tend(p.path(), &["apply", "--yes"], Stdio::null);
    wait_for(|| p.live().iter().filter(|l| l.hash != old).count() >= 1);
    run.kill();
    let updated = p.live().iter().filter(|l| l.hash != old).count();
    assert!(updated < 4, "the rollout finished before the kill");
    let _ = apply.wait_with_output();
    // The new controller reads progress from the tags: it finishes the rollout.
    let restarted = Running::start(&p, 19286, &[]);
    wait_for(|| {
        let live = p.live();
        live.len() == 4 && live.iter().all(|l| l.hash != old)
    });
    assert!(restarted.events("replaced") <= 4 - updated + 1);
}

#[test]
fn a_controller_started_during_an_apply_waits_for_it_then_keeps_the_project() {
    let spec = crate::process::chain(
        3,
        2,
        r#"exec(command = ["sleep", "0.3"], grace_period = "0s")"#,
    );
    let p = Project::new("it-run-waits", &spec);
    let apply = spawn_tend(p.path(), &["apply", "--yes"], Stdio::null);
    wait_for(|| !p.live().is_empty());
    // Restarted while an apply that found no controller holds the project: it waits for
    // the apply, where it used to exit and leave the project unkept.
    let run = Running::start(&p, 19298, &[]);
    let applied = apply.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert_eq!(
        p.live().len(),
        6,
        "the apply finished before the controller took over"
    );
    let victim = p.live()[0].clone();
    signal(victim.pid, "-KILL");
    wait_for(|| {
        let live = p.live();
        live.len() == 6 && live.iter().all(|l| l.pid != victim.pid)
    });
    wait_for(|| run.events("healed") == 1);
}

#[test]
fn a_slow_provider_is_never_asked_twice_for_the_same_slot() {
    let spec = r#"group(name = "cloud", size = 3, provider = sim(visible_after = "1500ms"), flavor = flavor(command = ["vm"]))
"#;
    let p = Project::new("it-run-slow", spec);
    let run = Running::start(&p, 19287, &[]);
    std::thread::sleep(Duration::from_secs(4));
    // The world's file has a line per instance made (and one counting them).
    let world = std::fs::read_to_string(p.path().join(".tend/sim/world.jsonl")).unwrap_or_default();
    assert_eq!(
        world.lines().filter(|l| l.starts_with("{\"put\"")).count(),
        3,
        "{world}"
    );
    assert_eq!(run.events("created"), 3);
    wait_for(|| converged(&p));
}

#[test]
fn events_stream_live() {
    let spec = r#"group(name = "work", size = 1, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#;
    let p = Project::new("it-run-events", spec);
    let run = Running::start(&p, 19288, &[]);
    wait_for(|| converged(&p));
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", run.port)).unwrap_or_else(|e| panic!("{e}"));
    use std::io::{BufRead, BufReader, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = write!(stream, "GET /events?follow HTTP/1.0\r\n\r\n");
    let victim = p.live()[0].pid;
    signal(victim, "-9");
    let mut reader = BufReader::new(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("\"kind\":\"exited\"") {
            return;
        }
    }
    panic!("no exited event streamed: {}", text(seen.as_bytes()));
}

#[test]
fn watch_reevaluates_a_changed_spec_and_keeps_running_on_a_broken_one() {
    let spec = |n: u32| {
        format!(
            r#"group(name = "work", size = {n}, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#
        )
    };
    let p = Project::new("it-run-watch", &spec(1));
    let run = Running::start(&p, 19289, &["--watch"]);
    wait_for(|| p.live().len() == 1 && converged(&p));
    // A broken spec is reported and ignored.
    std::fs::write(p.path().join("main.star"), "group(name = \n").unwrap_or_else(|e| panic!("{e}"));
    wait_for(|| {
        run.get("/events")
            .contains("the changed spec is not valid; keeping the running one")
    });
    assert_eq!(p.live().len(), 1);
    // Mtime granularity: make sure the next write is seen as a change.
    std::thread::sleep(Duration::from_millis(20));
    p.write_spec(&spec(3));
    wait_for(|| p.live().len() == 3 && converged(&p));
    let applied: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join(".tend/state.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(applied["serial"], 2);
}

/// A group of 4 behind HTTP checks on ports `ports + index`, rolled one at a time.
pub fn web_spec(command: &str, ports: u16) -> String {
    format!(
        r#"group(
    name = "web",
    size = 4,
    provider = process(),
    flavor = flavor(
        command = {command},
        health = http(port = "{{{{ {ports} + instance.index }}}}", path = "/", grace_period = "10s", interval = "500ms", failures = 2),
    ),
    update = rolling(max_unavailable = 1, health_timeout = "15s"),
)
"#
    )
}

#[test]
fn a_bad_deploy_under_run_pauses_after_one_batch_and_apply_says_so() {
    let serve = r#"["python3", "-m", "http.server", "{{ 18411 + instance.index }}", "--bind", "127.0.0.1"]"#;
    let p = Project::new("it-run-bad-deploy", &web_spec(serve, 18411));
    let run = Running::start(&p, 19291, &[]);
    wait_for(|| converged(&p) && (18411..18415).all(|port| http_get(port, "/").is_ok()));
    let old = p.live()[0].hash.clone();

    p.write_spec(&web_spec(r#"["sleep", "1000"]"#, 18411));
    let out = p.tend(&["apply", "--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("~ replace web/0"),
        "the plan was not shown: {stdout}"
    );
    assert!(
        stdout.contains("group web is paused: web/0: new instance"),
        "{stdout}"
    );
    assert!(!stdout.contains("converged."), "{stdout}");

    // Three of four still serve, and nothing more is taken down.
    let serving = (18411..18415)
        .filter(|port| http_get(*port, "/").is_ok())
        .count();
    assert_eq!(serving, 3);
    assert_eq!(p.live().iter().filter(|l| l.hash == old).count(), 3);
    let status = run.status();
    assert_eq!(status["groups"][0]["phase"]["phase"], "paused", "{status}");
    let metrics = run.get("/metrics");
    assert!(
        metrics.contains("tend_group_phase{group=\"web\",phase=\"paused\"} 1"),
        "{metrics}"
    );
    assert_eq!(run.events("paused"), 1);
    assert!(p.ok(&["status"]).contains("PAUSED: web/0: new instance"));

    // A paused group still heals dead instances at the hash they had.
    let victim = p
        .live()
        .into_iter()
        .find(|l| l.slot == "2")
        .unwrap_or_else(|| panic!("no instance in slot 2"));
    signal(victim.pid, "-9");
    wait_for(|| {
        p.live()
            .iter()
            .any(|l| l.slot == "2" && l.pid != victim.pid && l.hash == old)
    });
    wait_for(|| http_get(18413, "/").is_ok());
    assert_eq!(p.live().iter().filter(|l| l.hash == old).count(), 3);
}

#[test]
fn apply_beside_the_controller_shows_the_plan_and_asks() {
    let p = Project::new("it-run-ask", &rolling_spec("1000"));
    let _run = Running::start(&p, 19292, &[]);
    wait_for(|| p.live().len() == 4 && converged(&p));
    p.write_spec(&rolling_spec("1001"));
    let out = p.tend(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("~ replace work/0"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    // Nothing was handed over.
    let applied: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join(".tend/state.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(applied["serial"], 1);
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("~ replace work/0"), "{out}");
    assert!(out.contains("replaced   work/"), "no progress shown: {out}");
    assert!(out.contains("Serial 2 converged."), "{out}");
}

#[test]
fn kills_right_after_start_are_healed_at_once_and_never_trip_the_breaker() {
    let spec = r#"group(name = "many", size = 50, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#;
    let p = Project::new("it-run-kills", spec);
    let run = Running::start(&p, 19293, &[]);
    wait_for(|| p.live().len() == 50 && converged(&p));
    std::thread::sleep(Duration::from_secs(1));
    let mut killed = Vec::new();
    for round in 0..20 {
        let victim = p
            .live()
            .into_iter()
            .find(|l| !killed.contains(&l.slot))
            .unwrap_or_else(|| panic!("round {round}: nobody left to kill"));
        signal(victim.pid, "-9");
        killed.push(victim.slot.clone());
        wait_for(|| {
            let live = p.live();
            live.len() == 50
                && live
                    .iter()
                    .any(|l| l.slot == victim.slot && l.pid != victim.pid)
        });
    }
    wait_for(|| run.events("healed") == 20);
    wait_for(|| run.status()["groups"][0]["phase"]["phase"] == "converged");
    let status = run.status();
    assert!(status["groups"][0]["failing"].is_null(), "{status}");
    // No death of another slot made anyone wait.
    let events = run.get("/events");
    assert!(!events.contains("next try in"), "{events}");
}

#[test]
fn a_rollout_waiting_on_health_never_delays_a_heal_elsewhere() {
    let spec = |version: &str| {
        format!(
            r#"group(name = "slow", size = 2, provider = process(), flavor = flavor(command = ["sleep", "{version}"], health = exec(command = ["test", "{version}", "=", "1000"], grace_period = "60s", interval = "500ms")), update = rolling(max_unavailable = 1, health_timeout = "60s"))
group(name = "other", size = 2, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#
        )
    };
    let p = Project::new("it-run-no-delay", &spec("1000"));
    let run = Running::start(&p, 19294, &[]);
    wait_for(|| p.live().len() == 4 && converged(&p));
    // The new version never passes its check: its first replace waits a minute for it.
    p.write_spec(&spec("1001"));
    let mut apply = spawn_tend(p.path(), &["apply", "--yes"], Stdio::null);
    wait_for(|| {
        run.get("/events")
            .contains("\"kind\":\"started\",\"group\":\"slow\"")
    });
    let victim = p
        .live()
        .into_iter()
        .find(|l| l.group == "other")
        .unwrap_or_else(|| panic!("no instance of group other"));
    signal(victim.pid, "-9");
    // The heal happens while the rollout still waits.
    wait_for(|| run.events("healed") >= 1);
    let events = run.get("/events");
    assert!(
        !events.contains("\"kind\":\"replaced\",\"group\":\"slow\""),
        "{events}"
    );
    assert!(!events.contains("\"kind\":\"paused\""), "{events}");
    drop(run);
    // The apply that followed the controller ends when the controller does.
    let ended = apply.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ended.code(), Some(1));
}

#[test]
fn a_controller_whose_output_is_closed_keeps_working() {
    let spec = r#"group(name = "work", size = 2, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#;
    let p = Project::new("it-run-closed-pipe", spec);
    // `tend run 2>&1 | head -0`: nobody reads what it writes.
    let mut child = spawn_tend(
        p.path(),
        &["run", "--listen", "127.0.0.1:19295"],
        Stdio::piped,
    );
    drop(child.stdout.take());
    drop(child.stderr.take());
    wait_for(|| p.live().len() == 2 && converged(&p));
    let victim = p.live()[0].pid;
    signal(victim, "-9");
    wait_for(|| {
        let live = p.live();
        live.len() == 2 && !live.iter().any(|l| l.pid == victim)
    });
    signal(child.id(), "-TERM");
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0));
}

/// The first line of what the endpoint answers on a connection that sent `request`.
fn first_line(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.write_all(request.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_owned()
}

#[test]
fn the_endpoint_stays_bounded_and_answering() {
    use std::io::Write;
    use std::net::TcpStream;
    let spec = r#"group(name = "work", size = 1, provider = process(), flavor = flavor(command = ["sleep", "1000"]))
"#;
    let p = Project::new("it-run-endpoint", spec);
    let run = Running::start(&p, 19296, &["--max-connections", "1100"]);
    let connect =
        || TcpStream::connect(("127.0.0.1", run.port)).unwrap_or_else(|e| panic!("connect: {e}"));

    // A thousand clients that say nothing and one that sends its request a few bytes at a
    // time, never finishing it, leave /healthz answering.
    let idle: Vec<TcpStream> = (0..1000).map(|_| connect()).collect();
    let mut slow = connect();
    let _ = slow.write_all(b"GET /hea");
    assert_eq!(
        first_line(run.port, "GET /healthz HTTP/1.0\r\n\r\n"),
        "HTTP/1.0 200 OK"
    );
    let _ = slow.write_all(b"l");
    // Beyond the cap, a connection is refused at once rather than queued behind them. The
    // endpoint cuts off a client that sends nothing for 5 s, which a busy machine can reach
    // while the thousand are opened: then a few more are opened, at most three times.
    let mut more: Vec<TcpStream> = (1001..1100).map(|_| connect()).collect();
    let mut refused = first_line(run.port, "GET /healthz HTTP/1.0\r\n\r\n");
    for _ in 0..3 {
        if refused.contains(" 503 ") {
            break;
        }
        more.extend((0..100).map(|_| connect()));
        refused = first_line(run.port, "GET /healthz HTTP/1.0\r\n\r\n");
    }
    assert!(refused.contains(" 503 "), "{refused:?}");
    drop(more);
    drop(idle);
    wait_for(|| http_get(run.port, "/healthz").is_ok());

    // The slow client is cut off after the read timeout, unanswered.
    let mut rest = String::new();
    let _ = slow.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = std::io::Read::read_to_string(&mut slow, &mut rest);
    assert_eq!(rest, "", "a request head that never ends gets no answer");
    assert_eq!(
        first_line(run.port, "POST /status HTTP/1.0\r\n\r\n"),
        "HTTP/1.0 405 Method Not Allowed"
    );

    // Event streams whose clients hang up end at once, on an idle controller too, and
    // streams never take the places of plain requests.
    for _ in 0..3 {
        let streams: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut s = connect();
                let _ = std::io::Write::write_all(
                    &mut s,
                    b"GET /events?follow HTTP/1.1\r\nHost: tend\r\n\r\n",
                );
                s
            })
            .collect();
        assert!(http_get(run.port, "/healthz").is_ok());
        drop(streams);
    }
    wait_for(|| {
        let mut s = connect();
        let _ = std::io::Write::write_all(&mut s, b"GET /events?follow HTTP/1.0\r\n\r\n");
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut head).is_ok() && head.ends_with(b" 200")
    });
}

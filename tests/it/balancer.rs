//! Ports of their own and the balancer, with real processes: rolling updates behind the
//! balancer lose no request, a killed instance costs at most its open connections, an
//! unhealthy one gets no new connections.
//!
//! Clients talk to 127.0.0.1 only, and every load loop is bounded in count and time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::examples::http_get;
use crate::harness::signal;
use crate::process::{wait_for, Project};
use crate::run::{converged, Running};

/// Requests a load loop sends at most.
const MAX_REQUESTS: usize = 20_000;
/// How long a load loop runs at most.
const MAX_LOAD: Duration = Duration::from_secs(120);

/// One request through the balancer: when it started and what came back (the body, or why
/// it failed).
#[derive(Clone, Debug)]
pub struct Answer {
    pub at: Instant,
    pub result: Result<String, String>,
}

/// One GET on 127.0.0.1:`port`: the trimmed body of a 200 answer, or why not.
pub fn get(port: u16, path: &str) -> Result<String, String> {
    http_get(port, path).map(|body| body.trim().to_owned())
}

/// Clients sending requests to the balancer one after another until stopped, or until
/// `MAX_REQUESTS` or `MAX_LOAD`.
pub struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, path: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let threads = (0..clients)
            .map(|_| {
                let (stop, answers) = (stop.clone(), answers.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LOAD {
                        let at = Instant::now();
                        let result = get(port, path);
                        let mut all = answers.lock().unwrap_or_else(|e| e.into_inner());
                        if all.len() >= MAX_REQUESTS {
                            return;
                        }
                        all.push(Answer { at, result });
                        drop(all);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            threads,
        }
    }

    /// Stops the clients and returns every answer.
    pub fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let all = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        all.clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The failed answers, as text.
pub fn failures(answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|a| a.result.as_ref().err().cloned())
        .collect()
}

/// The ids in the rotation of `group`'s balancer, as the controller's `/status` says.
fn rotation(c: &Running, group: &str) -> Vec<String> {
    c.status()["balancers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["group"] == group)
        .flat_map(|b| b["in_rotation"].as_array().cloned().unwrap_or_default())
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect()
}

/// A 4-instance web group on ports of its own, serving `version` at `/v`, behind a balancer
/// on `lb`, updated by `update`: processes of python's http.server.
fn web(version: &str, lb: u16, update: &str) -> String {
    web_on(
        "process()",
        r#"["python3", "-m", "http.server", "{{ instance.ports.http }}", "--bind", "127.0.0.1"]"#,
        version,
        lb,
        update,
    )
}

/// The same group made by `provider`, running `command` (which serves its working folder
/// on its own port).
fn web_on(provider: &str, command: &str, version: &str, lb: u16, update: &str) -> String {
    format!(
        r#"load("@tend//policies.star", "rolling_safe")
group(
    name = "web",
    size = 4,
    provider = {provider},
    flavor = flavor(
        command = {command},
        files = {{"v": "{version} {{{{ instance.ports.http }}}}"}},
        ports = ["http"],
        health = http(port = "http", path = "/v", grace_period = "10s", interval = "300ms", failures = 2),
        drain_timeout = "5s",
    ),
    update = {update},
    expose = balancer(port = {lb}, drain_timeout = "5s"),
)
"#
    )
}

/// Rolls the group to version `to` (its `spec`) under load; checks that no request failed,
/// that every answer after the rollout comes from the new version, and from four instances
/// on four ports.
fn roll_under_load(p: &Project, lb: u16, to: &str, spec: &str) {
    let load = Load::start(lb, "/v", 3);
    std::thread::sleep(Duration::from_millis(300));
    p.write_spec(spec);
    let out = p.ok(&["apply", "--yes"]);
    assert!(out.contains("converged"), "{out}");
    wait_for(|| converged(p));
    let done = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let answers = load.finish();
    let failed = failures(&answers);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout to {to}: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert!(answers.len() > 50, "too few requests: {}", answers.len());
    let after: Vec<&String> = answers
        .iter()
        .filter(|a| a.at > done)
        .filter_map(|a| a.result.as_ref().ok())
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|body| body.starts_with(&format!("{to} "))),
        "answers after the rollout to {to}: {after:?}"
    );
    // Every instance got its own port, all different.
    let ports: std::collections::BTreeSet<String> = after
        .iter()
        .filter_map(|b| b.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    assert_eq!(ports.len(), 4, "{ports:?}");
}

#[test]
fn rolling_updates_behind_the_balancer_lose_no_request() {
    let lb = 19701;
    let p = Project::new(
        "it-lb-roll",
        &web("v1", lb, "rolling_safe(min_ready = \"1s\")"),
    );
    let c = Running::start(&p, 19702, &["--ports", "24200-24299"]);
    wait_for(|| converged(&p) && rotation(&c, "web").len() == 4);
    assert!(get(lb, "/v").is_ok_and(|b| b.starts_with("v1 ")));
    // Surge one, never below the allocation.
    let safe = "rolling_safe(min_ready = \"1s\")";
    roll_under_load(&p, lb, "v2", &web("v2", lb, safe));
    // One down at a time, in place.
    roll_under_load(&p, lb, "v3", &web("v3", lb, "rolling(max_unavailable = 1)"));
    // The instances really have the ports the status names, inside the range.
    let status = c.status();
    let instances = status["groups"][0]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(instances.len(), 4);
    for i in &instances {
        let port = i["ports"]["http"].as_u64().unwrap_or(0);
        assert!((24200..=24299).contains(&port), "{i}");
        assert_eq!(i["address"], format!("127.0.0.1:{port}"));
        assert!(get(port as u16, "/v").is_ok_and(|b| b == format!("v3 {port}")));
    }
}

#[test]
fn a_killed_instance_costs_at_most_its_open_connections() {
    let lb = 19711;
    let p = Project::new("it-lb-kill", &web("v1", lb, "rolling()"));
    let c = Running::start(&p, 19712, &["--ports", "24300-24399"]);
    wait_for(|| converged(&p) && rotation(&c, "web").len() == 4);
    let clients = 3;
    let load = Load::start(lb, "/v", clients);
    std::thread::sleep(Duration::from_millis(500));
    let victim = p.live()[0].pid;
    signal(victim, "-KILL");
    wait_for(|| converged(&p) && rotation(&c, "web").len() == 4 && p.live().len() == 4);
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.finish();
    let failed = failures(&answers);
    // Only the connections open on it when it died can fail: at most one per client.
    assert!(
        failed.len() <= clients,
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert!(answers.len() > 50, "too few requests: {}", answers.len());
}

#[test]
fn an_unhealthy_instance_gets_no_new_connections() {
    let lb = 19721;
    let spec = format!(
        r#"group(
    name = "web",
    size = 3,
    provider = process(),
    flavor = flavor(
        command = ["python3", "-m", "http.server", "{{{{ instance.ports.http }}}}", "--bind", "127.0.0.1"],
        files = {{"v": "{{{{ instance.ports.http }}}}", "ok": "yes"}},
        ports = ["http", "admin"],
        health = http(port = "http", path = "/ok", grace_period = "5s", interval = "200ms", failures = 1),
    ),
    expose = balancer(port = {lb}, target = "http"),
)
"#
    );
    let p = Project::new("it-lb-sick", &spec);
    let c = Running::start(&p, 19722, &["--ports", "24400-24499"]);
    wait_for(|| converged(&p) && rotation(&c, "web").len() == 3);
    let load = Load::start(lb, "/v", 2);
    std::thread::sleep(Duration::from_millis(300));
    // Two of the three still serve, but their checks fail from now on: more than half of
    // the group, so tend replaces neither (degraded) and they stay up, unhealthy.
    let status = c.status();
    let sick: Vec<(String, String)> = status["groups"][0]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .take(2)
        .map(|i| {
            let port = i["ports"]["http"].as_u64().unwrap_or(0).to_string();
            (i["id"].as_str().unwrap_or_default().to_owned(), port)
        })
        .collect();
    assert_eq!(sick.len(), 2);
    // The file its check asks for, in each one's working folder.
    let ok_file = |id: &str| {
        let pid = id.split('-').next().unwrap_or_default();
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .unwrap_or_else(|e| panic!("{e}"))
            .join("ok")
    };
    // Both turn sick while the controller is stopped, so their next probes run together and
    // one round judges both (else it might replace the first before it sees the second).
    signal(c.pid(), "-STOP");
    for (id, _) in &sick {
        std::fs::remove_file(ok_file(id)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    signal(c.pid(), "-CONT");
    // The round that judges them unhealthy takes them out of rotation.
    wait_for(|| rotation(&c, "web").len() == 1);
    let since = Instant::now();
    assert!(sick.iter().all(|(id, _)| !rotation(&c, "web").contains(id)));
    std::thread::sleep(Duration::from_millis(1500));
    let answers = load.finish();
    assert!(failures(&answers).is_empty(), "{:?}", failures(&answers));
    let events = http_get(19722, "/events").unwrap_or_default();
    assert!(events.contains("\"kind\":\"degraded\""), "{events}");
    for (id, _) in &sick {
        assert!(
            events
                .lines()
                .any(|l| l.contains("\"kind\":\"unhealthy\"") && l.contains(id.as_str())),
            "{id} left the rotation for another reason: {events}"
        );
    }
    // Still there, not replaced: only out of rotation.
    let live: Vec<String> = c.status()["groups"][0]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    assert!(sick.iter().all(|(id, _)| live.contains(id)), "{live:?}");
    let late: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at > since)
        .filter(|a| {
            sick.iter()
                .any(|(_, port)| a.result.as_deref() == Ok(port.as_str()))
        })
        .collect();
    assert!(
        late.is_empty(),
        "unhealthy instances got new connections: {late:?}"
    );
    assert!(
        answers.iter().filter(|a| a.at > since).count() > 20,
        "too few requests after the verdict"
    );
    assert!(
        answers.iter().any(|a| a.at < since
            && sick
                .iter()
                .any(|(_, p)| a.result.as_deref() == Ok(p.as_str()))),
        "they served through the balancer before"
    );
    // Healthy again: back in rotation.
    for (id, _) in &sick {
        std::fs::write(ok_file(id), "yes").unwrap_or_else(|e| panic!("{e}"));
    }
    wait_for(|| rotation(&c, "web").len() == 3);
}

/// The same rolling update with containers: each publishes its own port on a host port the
/// engine picks, and the balancer reaches it there.
#[test]
fn containers_roll_behind_the_balancer_without_losing_a_request() {
    use crate::docker::{containers, have_engine, ENGINE, IMAGE};
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    if !have_engine("balancer::containers_roll_behind_the_balancer_without_losing_a_request") {
        return;
    }
    let lb = 19731;
    let provider = format!("docker(\"{IMAGE}\")");
    let httpd = r#"["httpd", "-f", "-p", "{{ instance.ports.http }}", "-h", "/tend"]"#;
    let spec = |version: &str, update: &str| web_on(&provider, httpd, version, lb, update);
    let safe = r#"rolling_safe(min_ready = "1s")"#;
    let p = Project::new("it-lb-docker", &spec("v1", safe));
    let c = Running::start(&p, 19732, &["--ports", "24600-24699"]);
    wait_for(|| converged(&p) && rotation(&c, "web").len() == 4);
    // Reached on host ports the engine picked, not on the ports inside.
    let status = c.status();
    for i in status["groups"][0]["instances"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let host = i["ports"]["http"].as_u64().unwrap_or(0) as u16;
        let body = get(host, "/v").unwrap_or_else(|e| panic!("{i}: {e}"));
        let inside: u16 = body
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!((24600..=24699).contains(&inside), "{body}");
        assert_ne!(host, inside, "{i}");
    }
    // Surge one at a time, then one down at a time in place.
    roll_under_load(&p, lb, "v2", &spec("v2", safe));
    roll_under_load(&p, lb, "v3", &spec("v3", "rolling(max_unavailable = 1)"));
    drop(c);
    p.ok(&["destroy", "--yes"]);
    assert!(containers("it-lb-docker", true).is_empty());
}

/// Ports come from the range, are recorded on the instances, and a later command (a new
/// process, with no memory of what it gave) never gives one a live instance holds, even one
/// that nothing has bound. A range with no port left is an error that names it.
#[test]
fn a_port_held_by_a_live_instance_is_never_given_again() {
    let spec = |size: u32| {
        format!(
            r#"group(name = "w", size = {size}, provider = process(),
      flavor = flavor(command = ["sleep", "1000"], env = {{"PORT": "{{{{ instance.ports.http }}}}"}}, ports = ["http"]))
"#
        )
    };
    let p = Project::new("it-ports-held", &spec(3));
    p.ok(&["apply", "--yes", "--ports", "24700-24705"]);
    let ports = |p: &Project| -> Vec<u16> {
        let status: serde_json::Value =
            serde_json::from_str(&p.ok(&["status", "--json"])).unwrap_or_default();
        let mut ports: Vec<u16> = status["groups"][0]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] == "running")
            .filter_map(|i| i["ports"]["http"].as_u64().map(|p| p as u16))
            .collect();
        ports.sort_unstable();
        ports
    };
    let first = ports(&p);
    assert_eq!(first.len(), 3, "{first:?}");
    // The port is on the instance itself: in its environment, as the tag and as rendered.
    for live in p.live() {
        let environ = std::fs::read(format!("/proc/{}/environ", live.pid)).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ).into_owned();
        let port = environ
            .split('\0')
            .find_map(|kv| kv.strip_prefix("PORT="))
            .unwrap_or_default()
            .to_owned();
        assert!(
            environ.contains(&format!("TEND_PORTS=http={port}")),
            "{environ}"
        );
    }
    p.write_spec(&spec(6));
    p.ok(&["apply", "--yes", "--ports", "24700-24705"]);
    let all = ports(&p);
    assert_eq!(all, (24700..=24705).collect::<Vec<u16>>());
    p.write_spec(&spec(7));
    let out = p.tend(&["apply", "--yes", "--ports", "24700-24705"]);
    assert_eq!(out.status.code(), Some(1));
    let said = format!(
        "{}{}",
        crate::harness::text(&out.stdout),
        crate::harness::text(&out.stderr)
    );
    assert!(said.contains("no free port left in 24700-24705"), "{said}");
}

/// A connection held open through the balancer on 127.0.0.1:`lb`: the server has answered
/// nothing yet, so it stays open until the client or the instance closes it.
fn hold(lb: u16) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(("127.0.0.1", lb)).unwrap_or_else(|e| panic!("{e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    stream
}

/// True when the peer closed `stream` (reading returns the end of the stream or an error).
fn closed(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let _ = stream.set_nonblocking(true);
    let mut byte = [0u8; 1];
    let gone = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    gone
}

/// New balancer settings keep its socket and its rotation: no request fails while they
/// change, and a removed group's instances are drained before they stop.
#[test]
fn new_settings_keep_the_balancer_and_a_removed_group_is_drained() {
    let lb = 19741;
    let spec = |strategy: &str, drain: &str| {
        format!(
            r#"group(
    name = "web",
    size = 2,
    provider = process(),
    flavor = flavor(
        command = ["python3", "-m", "http.server", "{{{{ instance.ports.http }}}}", "--bind", "127.0.0.1"],
        files = {{"v": "{{{{ instance.ports.http }}}}"}},
        health = http(port = "http", path = "/v", grace_period = "10s", interval = "300ms"),
    ),
    expose = balancer(port = {lb}, strategy = "{strategy}", drain_timeout = "{drain}"),
)
"#
        )
    };
    let p = Project::new("it-lb-settings", &spec("round_robin", "5s"));
    let c = Running::start(&p, 19742, &["--ports", "24800-24899"]);
    wait_for(|| converged(&p) && rotation(&c, "web").len() == 2);
    let load = Load::start(lb, "/v", 3);
    for (strategy, drain) in [("least_connections", "20s"), ("round_robin", "30s")] {
        std::thread::sleep(Duration::from_millis(300));
        p.write_spec(&spec(strategy, drain));
        p.ok(&["apply", "--yes"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.finish();
    assert!(failures(&answers).is_empty(), "{:?}", failures(&answers));
    let events = http_get(19742, "/events").unwrap_or_default();
    assert!(events.contains("takes new settings"), "{events}");
    assert!(!events.contains("stopped"), "{events}");
    assert_eq!(rotation(&c, "web").len(), 2);

    // The group goes: its instances stop only once the connection open on them ends
    // (here, well before the drain timeout of 30 s).
    let mut held = hold(lb);
    std::thread::sleep(Duration::from_millis(200));
    p.write_spec("");
    let removing = std::thread::spawn({
        let dir = p.path().to_path_buf();
        move || crate::harness::tend(&dir, &["apply", "--yes"])
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !closed(&mut held),
        "the open connection was cut without a drain"
    );
    assert!(
        get(lb, "/v").is_err(),
        "a removed group's balancer still takes connections"
    );
    assert!(!p.live().is_empty(), "stopped before its connection ended");
    drop(held);
    let out = removing.join().unwrap_or_else(|_| panic!("apply panicked"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::harness::text(&out.stderr)
    );
    wait_for(|| p.live().is_empty());
}

/// Without `tend run`, `tend status` says nobody serves the balancer; a drain command reads
/// the ports of the instance it drains.
#[test]
fn status_says_who_serves_a_balancer_and_a_drain_command_gets_its_ports() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let drained = dir.path().join("drained");
    let spec = |version: &str| {
        format!(
            r#"group(
    name = "w",
    size = 1,
    provider = process(),
    flavor = flavor(
        command = ["sh", "-c", "sleep 1000; : {version}"],
        ports = ["http"],
        drain_command = ["sh", "-c", "echo {{{{ instance.ports.http }}}} >> {}"],
    ),
    expose = balancer(port = 19751),
)
"#,
            drained.display()
        )
    };
    let p = Project::new("it-lb-drain-ports", &spec("v1"));
    p.ok(&["apply", "--yes", "--ports", "24900-24999"]);
    let status = p.ok(&["status"]);
    assert!(
        status.contains("balancer on 127.0.0.1:19751: not served (only `tend run` serves it)"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", "--json"])).unwrap_or_default();
    let old = json["groups"][0]["instances"][0]["ports"]["http"]
        .as_u64()
        .unwrap_or(0);
    assert!((24900..=24999).contains(&old), "{json}");
    p.write_spec(&spec("v2"));
    p.ok(&["apply", "--yes", "--ports", "24900-24999"]);
    let written = std::fs::read_to_string(&drained).unwrap_or_default();
    assert_eq!(written.trim(), old.to_string());
}

/// Two live instances on one fixed port cannot be told apart by a probe there: the new one
/// is reported as such at once (no waiting for a timeout), and `apply` ends with exit 1.
#[test]
fn a_probe_that_cannot_tell_two_instances_apart_is_an_error_not_a_pass() {
    let spec = r#"group(
    name = "twins",
    size = 2,
    provider = process(),
    flavor = flavor(
        command = ["sh", "-c", "python3 -m http.server 24751 --bind 127.0.0.1; sleep 1000"],
        health = http(port = 24751, path = "/", grace_period = "20s", interval = "200ms"),
    ),
    update = rolling(health_timeout = "60s"),
)
"#;
    let p = Project::new("it-lb-twins", spec);
    let started = Instant::now();
    let out = p.tend(&["apply", "--yes"]);
    let said = format!(
        "{}{}",
        crate::harness::text(&out.stdout),
        crate::harness::text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("127.0.0.1:24751 is also instance")
            && said.contains("cannot tell them apart"),
        "{said}"
    );
    // Well before the 20 s grace and 60 s timeout that waiting would have taken.
    assert!(started.elapsed() < Duration::from_secs(20), "{said}");
}

//! Replicated controllers against a real three-member etcd cluster: three `tend run`
//! replicas of one project on the `sim` provider (one shared world file), killed, paused and
//! cut off from etcd's own leader. While each test runs, a watcher reads the world after
//! every change and records every instance ever made and every moment a slot held two live
//! instances. They run one at a time, never beside the simulation (`harness::QUIET`): a
//! failover is timed against leases whose clocks run on while the machine is busy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::etcd::{free_port, Cluster};
use crate::harness::{signal, text};

/// The spec at `version`: four sim instances that pass their checks a second after they
/// start, rolled one at a time in place (never two in a slot).
fn spec(version: u32) -> String {
    format!(
        r#"project(name = "ha")

group(
    name = "web",
    size = 4,
    provider = sim(ready_after = "1s"),
    flavor = flavor(command = ["web", "--v", "{version}"], health = tcp(port = "{{{{ 7000 + instance.index }}}}")),
    update = rolling(max_unavailable = 1),
)
"#
    )
}

/// An instance as the world file showed it.
#[derive(Clone, Debug)]
struct Made {
    slot: String,
    hash: String,
    op: String,
    epoch: String,
}

/// What the watcher saw.
#[derive(Default)]
struct Seen {
    made: BTreeMap<String, Made>,
    live: BTreeMap<String, Made>,
    two_in_a_slot: Vec<String>,
}

/// Reads the world file over and over while a test runs.
struct Watcher {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(world: PathBuf) -> Watcher {
        let mut first = Seen::default();
        fold(
            &std::fs::read_to_string(&world).unwrap_or_default(),
            &mut first,
        );
        let seen = Arc::new(Mutex::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if let Ok(text) = std::fs::read_to_string(&world) {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        fold(&text, &mut seen);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn with<T>(&self, look: impl FnOnce(&Seen) -> T) -> T {
        look(&self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Folds the world file into what is live now, remembering every instance ever made and
/// any slot that holds two live instances.
fn fold(text: &str, seen: &mut Seen) {
    let mut live: BTreeMap<String, Made> = BTreeMap::new();
    for line in text.lines() {
        let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(id) = line["drop"].as_str() {
            live.remove(id);
            continue;
        }
        let i = &line["put"]["instance"];
        let Some(id) = i["id"].as_str() else {
            continue;
        };
        let made = Made {
            slot: i["tags"]["slot"].as_str().unwrap_or("").to_owned(),
            hash: i["tags"]["hash"].as_str().unwrap_or("").to_owned(),
            op: i["labels"]["tend.op"].as_str().unwrap_or("").to_owned(),
            epoch: i["labels"]["tend.epoch"].as_str().unwrap_or("").to_owned(),
        };
        seen.made
            .entry(id.to_owned())
            .or_insert_with(|| made.clone());
        if i["state"].as_str() == Some("dead") {
            live.remove(id);
        } else {
            live.insert(id.to_owned(), made);
        }
    }
    let mut by_slot: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, m) in &live {
        by_slot.entry(&m.slot).or_default().push(id);
    }
    for (slot, ids) in by_slot {
        if ids.len() > 1 {
            seen.two_in_a_slot.push(format!("slot {slot}: {ids:?}"));
        }
    }
    seen.live = live;
}

/// A project kept by replicas in a temporary folder.
struct Project {
    dir: tempfile::TempDir,
    store: String,
    name: String,
    replicas: Vec<Replica>,
}

/// One `tend run` replica.
struct Replica {
    child: Option<Child>,
    pid: u32,
    listen: u16,
}

impl Project {
    fn new(cluster: &Cluster) -> Project {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let project = Project {
            dir,
            store: cluster.url(),
            name: "ha".to_owned(),
            replicas: Vec::new(),
        };
        project.write_spec(1);
        project
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_spec(&self, version: u32) {
        std::fs::write(self.path().join("main.star"), spec(version))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn world(&self) -> PathBuf {
        self.path().join(".tend/sim/world.jsonl")
    }

    fn tend(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--store", &self.store]);
        crate::harness::tend(self.path(), &all)
    }

    fn apply_in_background(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(["apply", "--yes", "--store", &self.store])
            .current_dir(self.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a replica; `ttl` and `keep_alive` as its flags say.
    fn start_replica(&mut self, ttl: &str, keep_alive: &str) {
        let listen = free_port();
        let log = std::fs::File::create(
            self.path()
                .join(format!("replica-{}.log", self.replicas.len())),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(["run", "--store", &self.store, "--resync", "2s"])
            .args(["--lease-ttl", ttl, "--keep-alive", keep_alive])
            .arg("--listen")
            .arg(format!("127.0.0.1:{listen}"))
            .current_dir(self.path())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        self.replicas.push(Replica {
            pid: child.id(),
            child: Some(child),
            listen,
        });
    }

    /// The replicas that announced themselves in etcd: (pid, leading, serial).
    fn members(&self, cluster: &Cluster) -> Vec<(u32, bool, u64)> {
        cluster
            .ctl(&[
                "get",
                "--prefix",
                &format!("/tend/v1/{}/members/", self.name),
                "--print-value-only",
            ])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|m| {
                (
                    m["pid"].as_u64().unwrap_or(0) as u32,
                    m["leading"].as_bool().unwrap_or(false),
                    m["serial"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// The pid of the replica that announced it leads, other than `not`.
    fn leader(&self, cluster: &Cluster, not: Option<u32>) -> Option<u32> {
        self.members(cluster)
            .into_iter()
            .find(|(pid, leading, _)| *leading && Some(*pid) != not)
            .map(|(pid, _, _)| pid)
    }

    fn wait_for_leader(&self, cluster: &Cluster, not: Option<u32>, within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(pid) = self.leader(cluster, not) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no replica leads after {within:?}; members: {:?}; logs:\n{}",
                self.members(cluster),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_replica(&mut self, pid: u32) {
        if let Some(r) = self.replicas.iter_mut().find(|r| r.pid == pid) {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn events(&self, pid: u32) -> String {
        let Some(r) = self.replicas.iter().find(|r| r.pid == pid) else {
            return String::new();
        };
        crate::balancer::get(r.listen, "/events").unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for i in 0..self.replicas.len() {
            let log = std::fs::read_to_string(self.path().join(format!("replica-{i}.log")))
                .unwrap_or_default();
            all.push_str(&format!(
                "--- replica {i} (pid {})\n{log}",
                self.replicas[i].pid
            ));
        }
        all
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take() {
                signal(child.id(), "-CONT");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Waits for a background apply; its exit status and output.
fn finish(mut apply: Child, within: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = apply.try_wait() {
            let out = apply
                .wait_with_output()
                .map(|o| text(&o.stdout) + &text(&o.stderr));
            return (status.code(), out.unwrap_or_default());
        }
        if Instant::now() >= deadline {
            let _ = apply.kill();
            let out = apply
                .wait_with_output()
                .map(|o| text(&o.stdout) + &text(&o.stderr));
            return (None, out.unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The hash of web instances made from `version`, from the first one seen.
fn live_hashes(watcher: &Watcher) -> BTreeSet<String> {
    watcher.with(|s| s.live.values().map(|m| m.hash.clone()).collect())
}

/// Starts the cluster, applies version 1 without any controller (the apply wins the
/// election itself), and starts three replicas.
fn three_replicas(test: &str, ttl: &str, keep_alive: &str) -> Option<(Cluster, Project, u32)> {
    let cluster = Cluster::start(test)?;
    let mut p = Project::new(&cluster);
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("4 created"),
        "{}",
        text(&out.stdout)
    );
    for _ in 0..3 {
        p.start_replica(ttl, keep_alive);
    }
    let leader = p.wait_for_leader(&cluster, None, Duration::from_secs(20));
    Some((cluster, p, leader))
}

/// Checks what the watcher saw after a rollout to `version_hash` finished: every live
/// instance at it, one made per slot, no op twice, never two live instances in a slot.
fn check_rollout(watcher: &Watcher, new_hash: &str) {
    watcher.with(|s| {
        assert!(
            s.two_in_a_slot.is_empty(),
            "two live in a slot: {:?}",
            s.two_in_a_slot
        );
        assert_eq!(s.live.len(), 4, "{:?}", s.live);
        assert!(s.live.values().all(|m| m.hash == new_hash), "{:?}", s.live);
        let mut per_slot: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ops = BTreeSet::new();
        for m in s.made.values() {
            if m.hash == new_hash {
                *per_slot.entry(&m.slot).or_default() += 1;
            }
            assert!(!m.op.is_empty() && !m.epoch.is_empty(), "untagged: {m:?}");
            assert!(ops.insert(m.op.clone()), "op {} made two instances", m.op);
        }
        assert_eq!(
            per_slot.values().copied().collect::<Vec<_>>(),
            vec![1, 1, 1, 1],
            "each slot's new instance made once: {:?}",
            s.made
        );
    });
}

#[test]
fn a_standby_finishes_the_rollout_of_a_leader_killed_in_its_middle() {
    let _quiet = crate::harness::QUIET
        .write()
        .unwrap_or_else(|p| p.into_inner());
    let test = "replicated::a_standby_finishes_the_rollout_of_a_leader_killed_in_its_middle";
    // The default lease: TTL 10 s, a keep-alive every 3 s.
    let Some((cluster, mut p, leader)) = three_replicas(test, "10s", "3s") else {
        return;
    };
    let watcher = Watcher::start(p.world());
    let old_hashes = live_hashes(&watcher);
    p.write_spec(2);
    let apply = p.apply_in_background();
    // Kill the leader once the rollout is under way: a slot at the new version.
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_hashes(&watcher).is_subset(&old_hashes) {
        assert!(
            Instant::now() < deadline,
            "the rollout did not start:\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill_replica(leader);
    let killed = Instant::now();
    let next = p.wait_for_leader(&cluster, Some(leader), Duration::from_secs(30));
    let failover = killed.elapsed();
    assert!(
        failover <= Duration::from_secs(12),
        "a standby ({next}) led {failover:?} after the leader was killed: more than TTL + 2 s"
    );
    let (code, out) = finish(apply, Duration::from_secs(60));
    assert_eq!(code, Some(0), "apply:\n{out}\nlogs:\n{}", p.logs());
    assert!(out.contains("converged"), "{out}");
    let new_hash = watcher.with(|s| s.live.values().next().map(|m| m.hash.clone()));
    check_rollout(&watcher, &new_hash.unwrap_or_default());
}

#[test]
fn a_paused_leader_acts_no_more_once_it_resumes() {
    let _quiet = crate::harness::QUIET
        .write()
        .unwrap_or_else(|p| p.into_inner());
    let test = "replicated::a_paused_leader_acts_no_more_once_it_resumes";
    let Some((cluster, p, leader)) = three_replicas(test, "4s", "1s") else {
        return;
    };
    let watcher = Watcher::start(p.world());
    signal(leader, "-STOP");
    let next = p.wait_for_leader(&cluster, Some(leader), Duration::from_secs(20));
    // The new leader rolls version 2 out while the old one sleeps.
    p.write_spec(2);
    let (code, out) = finish(p.apply_in_background(), Duration::from_secs(60));
    assert_eq!(code, Some(0), "apply:\n{out}\nlogs:\n{}", p.logs());
    let made_before = watcher.with(|s| s.made.keys().cloned().collect::<BTreeSet<_>>());
    let live_before = watcher.with(|s| s.live.keys().cloned().collect::<BTreeSet<_>>());
    signal(leader, "-CONT");
    let resumed = Instant::now();
    // It wakes believing it leads: give it time to try, and to learn otherwise.
    while resumed.elapsed() < Duration::from_secs(6) {
        let status = cluster.ctl(&["get", "/tend/v1/ha/status", "--print-value-only"]);
        let pid = serde_json::from_str::<serde_json::Value>(status.trim())
            .ok()
            .and_then(|s| s["pid"].as_u64());
        assert_ne!(
            pid,
            Some(u64::from(leader)),
            "the paused leader wrote the status"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let made_after = watcher.with(|s| s.made.keys().cloned().collect::<BTreeSet<_>>());
    let live_after = watcher.with(|s| s.live.keys().cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        made_after, made_before,
        "an instance was made after the pause"
    );
    assert_eq!(
        live_after, live_before,
        "an instance went away after the pause"
    );
    assert_eq!(
        p.leader(&cluster, None),
        Some(next),
        "{:?}",
        p.members(&cluster)
    );
    // It learns it no longer leads either way: its lease unconfirmed for too long, or its
    // first write refused by the fence; whichever comes first on a busy machine.
    let events = p.events(leader);
    assert!(
        events.contains("lost the lead")
            || events.contains("no longer leads the project: its write was refused (fenced)"),
        "{events}"
    );
    assert!(
        !events.contains("\"kind\":\"created\"") && !events.contains("\"kind\":\"destroyed\""),
        "{events}"
    );
}

#[test]
fn controllers_carry_on_when_etcds_own_leader_is_killed() {
    let _quiet = crate::harness::QUIET
        .write()
        .unwrap_or_else(|p| p.into_inner());
    let test = "replicated::controllers_carry_on_when_etcds_own_leader_is_killed";
    let Some((mut cluster, p, _)) = three_replicas(test, "4s", "1s") else {
        return;
    };
    let watcher = Watcher::start(p.world());
    let raft = cluster
        .raft_leader()
        .unwrap_or_else(|| panic!("no raft leader; logs in {}", cluster.dir().display()));
    cluster.kill(raft);
    p.write_spec(2);
    let (code, out) = finish(p.apply_in_background(), Duration::from_secs(90));
    assert_eq!(code, Some(0), "apply:\n{out}\nlogs:\n{}", p.logs());
    let leaders: Vec<u32> = p
        .members(&cluster)
        .into_iter()
        .filter(|(_, leading, _)| *leading)
        .map(|(pid, _, _)| pid)
        .collect();
    assert_eq!(leaders.len(), 1, "{:?}", p.members(&cluster));
    let new_hash = watcher.with(|s| s.live.values().next().map(|m| m.hash.clone()));
    check_rollout(&watcher, &new_hash.unwrap_or_default());
    // The killed member comes back on its data and catches up with the others.
    cluster.restart(raft);
    crate::process::wait_for(|| {
        let status = cluster.ctl(&["endpoint", "status", "-w", "json"]);
        let list: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        let leaders: BTreeSet<u64> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["Status"]["leader"].as_u64())
            .collect();
        list.as_array().map_or(0, Vec::len) == 3 && leaders.len() == 1
    });
}

#[test]
fn killing_a_standby_changes_nothing_and_an_apply_during_failover_is_kept() {
    let _quiet = crate::harness::QUIET
        .write()
        .unwrap_or_else(|p| p.into_inner());
    let test = "replicated::killing_a_standby_changes_nothing_and_an_apply_during_failover_is_kept";
    let Some((cluster, mut p, leader)) = three_replicas(test, "4s", "1s") else {
        return;
    };
    let watcher = Watcher::start(p.world());
    let made = watcher.with(|s| s.made.clone().into_keys().collect::<BTreeSet<_>>());
    let standby = p
        .replicas
        .iter()
        .map(|r| r.pid)
        .find(|pid| *pid != leader)
        .unwrap_or_default();
    p.kill_replica(standby);
    let deadline = Instant::now() + Duration::from_secs(15);
    while p
        .members(&cluster)
        .iter()
        .any(|(pid, _, _)| *pid == standby)
    {
        assert!(Instant::now() < deadline, "{:?}", p.members(&cluster));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.leader(&cluster, None), Some(leader));
    assert_eq!(
        watcher.with(|s| s.made.clone().into_keys().collect::<BTreeSet<_>>()),
        made,
        "killing a standby made or removed instances"
    );
    // Now the leader dies and a new spec is applied at once, while nobody leads.
    p.kill_replica(leader);
    p.write_spec(2);
    let (code, out) = finish(p.apply_in_background(), Duration::from_secs(60));
    assert_eq!(code, Some(0), "apply:\n{out}\nlogs:\n{}", p.logs());
    let last = p
        .replicas
        .iter()
        .map(|r| r.pid)
        .find(|pid| *pid != leader && *pid != standby);
    assert_eq!(p.leader(&cluster, None), last);
    let new_hash = watcher.with(|s| s.live.values().next().map(|m| m.hash.clone()));
    check_rollout(&watcher, &new_hash.unwrap_or_default());
}

/// A TCP port on 127.0.0.1 that leads to the Docker engine's socket: an engine "listening
/// on tcp" without reconfiguring the machine's engine. Stops accepting when dropped.
struct EngineOverTcp {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl EngineOverTcp {
    fn start() -> EngineOverTcp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = tcp.set_nonblocking(false);
                let Ok(unix) = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
                else {
                    continue;
                };
                let (Ok(mut tcp_in), Ok(mut unix_in)) = (tcp.try_clone(), unix.try_clone()) else {
                    continue;
                };
                let (mut tcp_out, mut unix_out) = (tcp, unix);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut tcp_in, &mut unix_out);
                    let _ = unix_out.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut unix_in, &mut tcp_out);
                    let _ = tcp_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        EngineOverTcp { port, stop }
    }
}

impl Drop for EngineOverTcp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Running containers of `project`: (id, fencing token label).
fn containers(project: &str) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args(["ps", "--no-trunc", "--filter"])
        .arg(format!("label=tend.project={project}"))
        .args(["--format", "{{.ID}} {{.Label \"tend.epoch\"}}"])
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"));
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, epoch)| (id.to_owned(), epoch.to_owned()))
        .collect()
}

#[test]
fn replicas_keep_containers_on_an_engine_they_reach_over_tcp() {
    let _engine = crate::docker::ENGINE
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let _quiet = crate::harness::QUIET
        .write()
        .unwrap_or_else(|p| p.into_inner());
    let test = "replicated::replicas_keep_containers_on_an_engine_they_reach_over_tcp";
    if !crate::docker::have_engine(test) {
        return;
    }
    let Some(cluster) = Cluster::start(test) else {
        return;
    };
    let engine = EngineOverTcp::start();
    let mut p = Project::new(&cluster);
    p.name = "it-ha-docker".to_owned();
    std::fs::write(
        p.path().join("main.star"),
        format!(
            r#"project(name = "it-ha-docker")
group(name = "web", size = 2, provider = docker("{}", host = "tcp://127.0.0.1:{}", network = "none"), flavor = flavor(command = ["sleep", "1000"]))
"#,
            crate::docker::IMAGE,
            engine.port
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = p.tend(&["apply", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let first = containers("it-ha-docker");
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        first.iter().all(|(_, epoch)| !epoch.is_empty()),
        "{first:?}"
    );
    for _ in 0..3 {
        p.start_replica("4s", "1s");
    }
    let leader = p.wait_for_leader(&cluster, None, Duration::from_secs(20));
    p.kill_replica(leader);
    p.wait_for_leader(&cluster, Some(leader), Duration::from_secs(20));
    // The new leader heals a container the engine lost.
    let (victim, _) = first[0].clone();
    // (A killed container may be started again in place: same id.)
    let killed = Command::new("docker").args(["kill", &victim]).output();
    assert!(killed.is_ok_and(|o| o.status.success()));
    assert_eq!(containers("it-ha-docker").len(), 1);
    // Started again in place, or replaced: two run again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = containers("it-ha-docker");
        if now.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not healed: {now:?}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stopped replicas step down at once; then the project can be destroyed.
    for r in &mut p.replicas {
        if let Some(mut child) = r.child.take() {
            signal(child.id(), "-TERM");
            let _ = child.wait();
        }
    }
    let out = p.tend(&["destroy", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(containers("it-ha-docker").is_empty());
}

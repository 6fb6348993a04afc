//! Replicated controllers on a real etcd and a real Docker engine, timed by the engine's
//! own event clock:
//!
//! - **failover**: the leader is killed (`kill -9`), then one of the project's containers;
//!   the time from the leader's kill until the container starts again is the time until
//!   the new leader's first action. Over `TEND_BENCH_RUNS` runs (10 by default): median and max.
//! - **heal**: a container is killed while the controller runs; from its `die` to its next
//!   `start`, with one `tend run` on the local store, then with three replicas on etcd.
//!
//! Needs etcd, etcdctl and a Docker engine with the `tend-busybox:test` image (`.ci/run`
//! builds it). `cargo bench --bench failover` prints a table. Each kill waits until its
//! container ran 11 s, so no heal is taken for a crash loop; a run of 10 takes ~7 minutes.

#[path = "../tests/it/etcd.rs"]
#[allow(dead_code)]
mod etcd;

/// What `tests/it/etcd.rs` expects of the test harness.
mod harness {
    /// Says why the benchmark cannot run.
    pub fn skip(what: &str, why: &str) {
        eprintln!("{what}: {why}");
    }
}

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PROJECT: &str = "bench-failover";
const IMAGE: &str = "tend-busybox:test";
/// How long an instance runs before it is killed: past the 10 s within which a death counts
/// as a crash of its slot.
const HOLD: Duration = Duration::from_secs(11);

fn tend() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tend"))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The engine's events for the project: (time in ns, action, container id).
fn events() -> (Child, mpsc::Receiver<(u128, String, String)>) {
    let mut child = Command::new("docker")
        .args(["events", "--filter"])
        .arg(format!("label=tend.project={PROJECT}"))
        .args(["--format", "{{.TimeNano}} {{.Action}} {{.Actor.ID}}"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("docker events: {e}"));
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let mut words = line.split_whitespace();
            let (Some(at), Some(action), Some(id)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if tx
                .send((at.parse().unwrap_or(0), action.to_owned(), id.to_owned()))
                .is_err()
            {
                return;
            }
        }
    });
    (child, rx)
}

/// The next event `action` (after `since_ns`), within `within`.
fn next_event(
    rx: &mpsc::Receiver<(u128, String, String)>,
    action: &str,
    since_ns: u128,
    within: Duration,
) -> Option<(u128, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (at, a, id) = rx.recv_timeout(left).ok()?;
        if a == action && at >= since_ns {
            return Some((at, id));
        }
    }
}

fn running() -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=tend.project={PROJECT}"))
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_running(count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while running().len() != count {
        assert!(Instant::now() < deadline, "{count} containers did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills one container `runs` times; each heal from its `die` to its next `start`, in ms.
fn heals(rx: &mpsc::Receiver<(u128, String, String)>, runs: usize) -> Vec<f64> {
    let mut took = Vec::new();
    for run in 0..runs {
        wait_running(2, Duration::from_secs(60));
        // An instance that dies within 10 s of its start counts as a crash of its slot, which
        // backs off: wait that out, and take the two containers in turn.
        std::thread::sleep(HOLD);
        while rx.try_recv().is_ok() {}
        let mut all = running();
        all.sort();
        let victim = all.get(run % 2).cloned().unwrap_or_default();
        let _ = Command::new("docker").args(["kill", &victim]).output();
        let Some((died, _)) = next_event(rx, "die", 0, Duration::from_secs(10)) else {
            panic!("no die event")
        };
        let Some((started, _)) = next_event(rx, "start", died, Duration::from_secs(60)) else {
            panic!("{victim} not healed within 60 s")
        };
        took.push((started - died) as f64 / 1e6);
    }
    took
}

fn stats(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    (median, sorted.last().copied().unwrap_or(0.0))
}

/// Processes this benchmark started (replicas, a single controller, the event reader),
/// stopped when dropped, however the benchmark ends.
struct Processes {
    /// The etcd store replicas are started with.
    store: String,
    dir: std::path::PathBuf,
    children: Vec<Child>,
}

impl Processes {
    fn start_one(&mut self) {
        let child = tend()
            .args(["run", "--store", &self.store, "--listen"])
            .arg(format!("127.0.0.1:{}", etcd::free_port()))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        self.children.push(child);
    }

    /// The leader's pid, from `members/` in etcd: one of the replicas still running (a
    /// killed leader's entry stays until its lease runs out).
    fn leader(&self, cluster: &etcd::Cluster) -> Option<u32> {
        let live: Vec<u32> = self.children.iter().map(Child::id).collect();
        cluster
            .ctl(&[
                "get",
                "--prefix",
                &format!("/tend/v1/{PROJECT}/members/"),
                "--print-value-only",
            ])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["leading"].as_bool() == Some(true))
            .filter_map(|m| m["pid"].as_u64().map(|p| p as u32))
            .find(|pid| live.contains(pid))
    }

    fn wait_leader(&self, cluster: &etcd::Cluster, not: Option<u32>) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(pid) = self.leader(cluster).filter(|p| Some(*p) != not) {
                return pid;
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() {
    let runs: usize = std::env::var("TEND_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    if !Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("failover bench: needs a Docker engine with {IMAGE} (.ci/run builds it)");
        return;
    }
    let Some(cluster) = etcd::Cluster::start("failover bench") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("main.star"),
        format!(
            "project(name = {PROJECT:?})\n\
             group(name = \"web\", size = 2, provider = docker({IMAGE:?}, network = \"none\"), flavor = flavor(command = [\"sleep\", \"100000\"]))\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (watcher, rx) = events();
    let mut watcher = Processes {
        store: String::new(),
        dir: dir.path().to_owned(),
        children: vec![watcher],
    };
    let ok = |mut c: Command| {
        let out = c.output().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // One controller on the local store.
    let mut apply = tend();
    apply.args(["apply", "--yes"]).current_dir(dir.path());
    ok(apply);
    let mut single = Processes {
        store: String::new(),
        dir: dir.path().to_owned(),
        children: vec![tend()
            .args(["run", "--listen"])
            .arg(format!("127.0.0.1:{}", etcd::free_port()))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))],
    };
    std::thread::sleep(Duration::from_secs(2));
    let heal_single = heals(&rx, runs);
    single.stop();
    let mut destroy = tend();
    destroy.args(["destroy", "--yes"]).current_dir(dir.path());
    ok(destroy);

    // Three replicas on etcd.
    let store = cluster.url();
    let mut apply = tend();
    apply
        .args(["apply", "--yes", "--store", &store])
        .current_dir(dir.path());
    ok(apply);
    let mut replicas = Processes {
        store: store.clone(),
        dir: dir.path().to_owned(),
        children: Vec::new(),
    };
    for _ in 0..3 {
        replicas.start_one();
    }
    replicas.wait_leader(&cluster, None);
    std::thread::sleep(Duration::from_secs(2));
    let heal_replicated = heals(&rx, runs);

    // Failovers: the leader and a container killed together.
    let mut failover = Vec::new();
    let mut elected = Vec::new();
    for _ in 0..runs {
        wait_running(2, Duration::from_secs(60));
        std::thread::sleep(HOLD);
        let leader = replicas.wait_leader(&cluster, None);
        while rx.try_recv().is_ok() {}
        let victim = running().into_iter().next().unwrap_or_default();
        let killed_at = now_ns();
        let killed = Instant::now();
        // SAFETY: kill(2) on a pid this benchmark started and has not yet reaped.
        unsafe {
            libc::kill(leader as i32, libc::SIGKILL);
        }
        // Then a container: only the next leader can heal it.
        let _ = Command::new("docker").args(["kill", &victim]).output();
        replicas.wait_leader(&cluster, Some(leader));
        elected.push(killed.elapsed().as_secs_f64());
        let Some((started, _)) = next_event(&rx, "start", killed_at, Duration::from_secs(60))
        else {
            panic!("the new leader did not act within 60 s")
        };
        failover.push((started - killed_at) as f64 / 1e9);
        if let Some(i) = replicas.children.iter().position(|c| c.id() == leader) {
            let mut dead = replicas.children.remove(i);
            let _ = dead.wait();
        }
        replicas.start_one();
    }
    replicas.stop();
    let mut destroy = tend();
    destroy
        .args(["destroy", "--yes", "--store", &store])
        .current_dir(dir.path());
    ok(destroy);
    watcher.stop();

    let (f_median, f_max) = stats(&failover);
    let (e_median, e_max) = stats(&elected);
    let (s_median, s_max) = stats(&heal_single);
    let (r_median, r_max) = stats(&heal_replicated);
    println!("replicated controllers, {runs} runs each (lease TTL 10 s, keep-alive 3 s)");
    println!("{:<52} {:>10} {:>10}", "", "median", "max");
    println!(
        "{:<52} {:>9.2}s {:>9.2}s",
        "failover: leader kill -9 -> new leader's first action", f_median, f_max
    );
    println!(
        "{:<52} {:>9.2}s {:>9.2}s",
        "failover: leader kill -9 -> new leader announced", e_median, e_max
    );
    println!(
        "{:<52} {:>8.0}ms {:>8.0}ms",
        "heal of a killed container, one controller (local)", s_median, s_max
    );
    println!(
        "{:<52} {:>8.0}ms {:>8.0}ms",
        "heal of a killed container, three replicas (etcd)", r_median, r_max
    );
    println!(
        "three replicas / one controller, median heal: {:.2}x",
        r_median / s_median.max(f64::MIN_POSITIVE)
    );
}

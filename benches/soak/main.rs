//! The chaos soak: the whole program, over time, against the real OS, a real Docker engine
//! and a real etcd. A project of process and Docker groups (health checks, an `ids` group,
//! sized groups, a dependency) is kept first by three `tend run` replicas on a three-member
//! etcd on 127.0.0.1, then by one controller on the local store. From a printed seed,
//! bursts of faults are injected at random (see `faults`), and after each burst the
//! project must converge within [`CONVERGE_BOUND`]. The promises in `invariants` are
//! checked on every look at the process table and `docker ps`, never against tend's own
//! report. At the end it prints faults by kind, heals, time to converge, what the
//! controllers and `.tend/` held at the start and the end, and every broken promise with
//! the seed and the time; it exits 1 when one broke.
//!
//! `cargo bench --profile dev --bench soak -- --duration 10m [--seed N] [--phase etcd|local]`
//!
//! Needs etcd, etcdctl, busybox and a Docker engine with `tend-busybox:test` (`.ci/run`
//! builds it); it stops dockerd and starts it again. Everything it starts is stopped by
//! pid, and what the project made is removed with `tend destroy`.

#[path = "../../tests/it/etcd.rs"]
#[allow(dead_code)]
mod etcd;
mod faults;
mod invariants;
mod spec;
mod vitals;
mod world;

/// What `tests/it/etcd.rs` expects of the test harness.
mod harness {
    /// Says why the soak cannot run.
    pub fn skip(what: &str, why: &str) {
        eprintln!("{what}: {why}");
    }
}

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faults::{Controllers, Undo};
use invariants::{Rollouts, Violation};
use spec::Shape;
use vitals::Vitals;

const IMAGE: &str = "tend-busybox:test";
/// How long the project may take to converge after a burst of faults ends.
const CONVERGE_BOUND: Duration = Duration::from_secs(150);
/// A controller is first sampled once it ran this long.
const WARM_UP: Duration = Duration::from_secs(20);
/// How often the OS and the engine are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Set by SIGINT or SIGTERM: the soak ends its phase early, cleans up and reports.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ends the soak gracefully on Ctrl-C or SIGTERM, so what it made is still removed.
fn on_interrupt() {
    let handler = interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A small deterministic generator (splitmix64): a seed gives the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// The command line.
struct Args {
    duration: Duration,
    seed: u64,
    phases: Vec<&'static str>,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    Some(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    }))
}

fn args() -> Args {
    let mut args = Args {
        duration: Duration::from_secs(600),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        phases: vec!["etcd", "local"],
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--duration" => {
                let value = given.next().unwrap_or_default();
                args.duration = parse_duration(&value)
                    .unwrap_or_else(|| panic!("--duration takes 90s, 10m or 1h, got {value:?}"));
            }
            "--seed" => {
                let value = given.next().unwrap_or_default();
                args.seed = value
                    .parse()
                    .unwrap_or_else(|_| panic!("--seed takes a number, got {value:?}"));
            }
            "--phase" => {
                args.phases = match given.next().as_deref() {
                    Some("etcd") => vec!["etcd"],
                    Some("local") => vec!["local"],
                    other => panic!("--phase takes etcd or local, got {other:?}"),
                }
            }
            // cargo bench passes --bench to a bench without the test harness.
            "--bench" => {}
            other => panic!("unknown argument {other:?}: --duration, --seed, --phase"),
        }
    }
    args
}

/// What a phase counted.
#[derive(Default)]
struct Tally {
    faults: BTreeMap<&'static str, u32>,
    /// Instances seen starting that no spec change asked for.
    heals: u32,
    /// Instances seen starting in all.
    started: u32,
    converge_s: Vec<f64>,
    violations: Vec<Violation>,
    bursts: u32,
    /// Spec changes whose `tend apply` did not end converged.
    stopped_applies: u32,
    /// The longest-lived controller: pid, seconds between its samples, first and last.
    vitals: Option<(u32, f64, Vitals, Vitals)>,
    /// `.tend/` at the start and the end, in bytes.
    state_bytes: (u64, u64),
    leaks: Vec<String>,
}

/// One phase: a project, its controllers, the faults.
struct Phase<'a> {
    name: &'static str,
    dir: PathBuf,
    project: String,
    store: Option<String>,
    cluster: Option<&'a mut etcd::Cluster>,
    controllers: Controllers,
    shape: Shape,
    before: Shape,
    rollouts: Rollouts,
    apply: Option<(Child, Instant)>,
    undo: Vec<(Instant, Undo)>,
    rng: Rng,
    /// The seed, printed with every broken promise.
    seed: u64,
    began: Instant,
    seen: BTreeSet<String>,
    tally: Tally,
    dockerd_log: PathBuf,
    /// Instances started by a spec change are not heals: until the next convergence.
    changing: bool,
    /// `tend destroy` ran.
    destroyed: bool,
    /// Each controller's first sample, by pid.
    first_samples: BTreeMap<u32, (Instant, Vitals)>,
    /// The shape before a change whose apply stopped: the project may settle there too.
    alternative: Option<Shape>,
    /// Which `tend apply` this is, for its log file.
    applies: u32,
}

impl Drop for Phase<'_> {
    /// A phase that ends early (a panic) still removes what it made.
    fn drop(&mut self) {
        if !self.destroyed {
            let _ = self.clean_up();
        }
    }
}

impl Phase<'_> {
    fn tend(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tend"));
        c.args(args).current_dir(&self.dir);
        if let Some(store) = &self.store {
            c.args(["--store", store]);
        }
        c
    }

    fn write_spec(&self) {
        std::fs::write(
            self.dir.join("main.star"),
            self.shape.render(&self.project, IMAGE),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn at_s(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    /// Looks once: checks the promises, counts new instances, undoes what is due and
    /// reaps a finished apply.
    fn look(&mut self) -> world::World {
        let world = world::look(&self.project);
        self.sample_controllers();
        for what in invariants::check(&world, &self.shape, &self.before, &self.rollouts) {
            let at_s = self.at_s();
            eprintln!("VIOLATION at {at_s:.1}s (seed {}): {what}", self.seed);
            self.tally.violations.push(Violation { at_s, what });
        }
        for i in &world.instances {
            let key = format!("{:?}", i.handle);
            if self.seen.insert(key) {
                self.tally.started += 1;
                if !self.changing {
                    self.tally.heals += 1;
                }
            }
        }
        let now = Instant::now();
        let due: Vec<Undo> = {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.undo)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.undo = later;
            due.into_iter().map(|(_, u)| u).collect()
        };
        for u in due {
            self.undo_one(u);
        }
        if let Some((child, started)) = &mut self.apply {
            let exited = child.try_wait().ok().flatten();
            let late = started.elapsed() > Duration::from_secs(300);
            if exited.is_none() && late {
                let _ = child.kill();
            }
            if exited.is_some() || late {
                let ok = child.wait().is_ok_and(|s| s.success());
                self.apply = None;
                if !ok {
                    self.apply_stopped();
                }
            }
        }
        world
    }

    /// A spec change's `tend apply` did not end converged. It exits 1 while any group is
    /// paused (an earlier bad deploy too), when faults paused or rolled back the rollout
    /// it handed over, or when a fault on etcd or the controller kept its spec from being
    /// committed. Whether it was committed is read from its log (a serial, or an apply's
    /// summary); the verdict on the instances never is: a rolled group may then settle
    /// serving within its budget at any version, and an uncommitted change may leave the
    /// project at the shape before it.
    fn apply_stopped(&mut self) {
        self.tally.stopped_applies += 1;
        let log = std::fs::read_to_string(self.dir.join(format!("apply-{}.log", self.applies)))
            .unwrap_or_default();
        let committed = log.contains("Serial ") || log.contains("Apply ");
        if !committed {
            self.alternative = Some(self.before.clone());
        }
        let rolled: Vec<&'static str> = self
            .shape
            .groups
            .iter()
            .filter(|g| {
                self.before
                    .group(g.name)
                    .is_some_and(|b| b.version != g.version)
            })
            .map(|g| g.name)
            .collect();
        for name in rolled {
            self.shape.stall(name);
        }
    }

    /// True when the project settled: at the wanted shape, or at the one before a change
    /// whose apply stopped.
    fn converged(&self, world: &world::World) -> bool {
        invariants::converged(world, &self.shape)
            || self
                .alternative
                .as_ref()
                .is_some_and(|b| invariants::converged(world, b))
    }

    fn undo_one(&mut self, u: Undo) {
        match u {
            Undo::Resume(handle) => faults::resume(&handle),
            Undo::Heal(page, content) => faults::heal(&page, &content),
            Undo::Controller(index) => self.controllers.start_one(index),
            Undo::Member(index) => {
                if let Some(c) = self.cluster.as_deref_mut() {
                    c.restart(index);
                }
            }
        }
    }

    /// Waits `d`, looking all the while.
    fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !interrupted() {
            self.look();
            std::thread::sleep(LOOK_EVERY);
        }
    }

    /// Undoes what is left (the burst ends), then waits until the project converges
    /// (twice in a row) and a spec change's apply is done: the time that took from the
    /// burst's end, or a violation past the bound.
    fn settle(&mut self) -> Option<f64> {
        while !self.undo.is_empty() {
            self.look();
            std::thread::sleep(LOOK_EVERY);
        }
        // From here the burst is over; a spec change is done once its apply is.
        let began = Instant::now();
        let mut in_a_row = 0;
        while began.elapsed() < CONVERGE_BOUND && !interrupted() {
            let world = self.look();
            in_a_row = if self.apply.is_none() && self.converged(&world) {
                in_a_row + 1
            } else {
                0
            };
            if in_a_row == 2 {
                self.alternative = None;
                self.before = self.shape.clone();
                self.rollouts.end_all();
                self.changing = false;
                return Some(began.elapsed().as_secs_f64());
            }
            std::thread::sleep(LOOK_EVERY);
        }
        if interrupted() {
            return None;
        }
        let world = self.look();
        let at_s = self.at_s();
        let what = format!(
            "not converged within {}s of the burst's end: wanted {:?}, live {:?}",
            CONVERGE_BOUND.as_secs(),
            self.shape
                .all()
                .iter()
                .map(|g| (g.name, g.size, g.label(), g.bad))
                .collect::<Vec<_>>(),
            world
                .instances
                .iter()
                .map(|i| format!(
                    "{}/{} {} {}",
                    i.group,
                    i.slot,
                    i.version,
                    if i.healthy { "ok" } else { "not ok" }
                ))
                .collect::<Vec<_>>()
        );
        eprintln!("VIOLATION at {at_s:.1}s (seed {}): {what}", self.seed);
        self.tally.violations.push(Violation { at_s, what });
        self.alternative = None;
        self.before = self.shape.clone();
        self.rollouts.end_all();
        self.changing = false;
        None
    }

    fn count(&mut self, kind: &'static str) {
        *self.tally.faults.entry(kind).or_default() += 1;
    }

    /// One burst: one to three faults.
    fn burst(&mut self) {
        let world = self.look();
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            self.fault(&world);
        }
        self.tally.bursts += 1;
    }

    fn fault(&mut self, world: &world::World) {
        let docker = self.shape.groups.iter().any(|g| g.docker);
        let roll = self.rng.below(100);
        let victim = self.rng.pick(&world.instances).cloned();
        match roll {
            0..=19 => {
                if let Some(i) = victim {
                    faults::kill(&i);
                    self.rollouts.faulted(&i.group);
                    self.count("instance SIGKILL");
                }
            }
            20..=31 => {
                if let Some(i) = victim {
                    let back = Instant::now() + self.rng.millis(1000, 8000);
                    let undo = faults::stop(&i);
                    self.undo.push((back, undo));
                    self.rollouts.faulted(&i.group);
                    self.count("instance SIGSTOP/SIGCONT");
                }
            }
            32..=43 => {
                let checked: Vec<_> = world
                    .instances
                    .iter()
                    .filter(|i| i.port.is_some())
                    .cloned()
                    .collect();
                if let Some(i) = self.rng.pick(&checked).cloned() {
                    if let Some(undo) = faults::fail_health(&i, &self.dir.join(".tend")) {
                        let back = Instant::now() + self.rng.millis(2000, 12000);
                        self.undo.push((back, undo));
                        self.rollouts.faulted(&i.group);
                        self.count("health check failing, then passing");
                    }
                }
            }
            44..=53 => {
                let index = self.rng.below(self.controllers.children.len() as u64) as usize;
                if let Some(undo) = self.controllers.kill(index) {
                    let back = Instant::now() + self.rng.millis(500, 5000);
                    self.undo.push((back, undo));
                    self.count("controller SIGKILL and restart");
                }
            }
            54..=59 if docker => {
                let down = self.rng.millis(1000, 4000);
                faults::restart_dockerd(down, &self.dockerd_log);
                for g in self.shape.all().iter().filter(|g| g.docker) {
                    self.rollouts.faulted(g.name);
                }
                self.count("dockerd stop and restart");
            }
            60..=67 => {
                let members_down = self.undo.iter().any(|(_, u)| matches!(u, Undo::Member(_)));
                let index = self.rng.below(3) as usize;
                if let (Some(cluster), false) = (self.cluster.as_deref_mut(), members_down) {
                    cluster.kill(index);
                    let back = Instant::now() + self.rng.millis(1000, 6000);
                    self.undo.push((back, Undo::Member(index)));
                    self.count("etcd member SIGKILL and restart");
                }
            }
            _ => self.change_spec(),
        }
    }

    /// A spec change, handed over with `tend apply` (one at a time).
    fn change_spec(&mut self) {
        if self.apply.is_some() {
            return;
        }
        let names: Vec<&'static str> = self.shape.groups.iter().map(|g| g.name).collect();
        let Some(group) = self.rng.pick(&names).copied() else {
            return;
        };
        let kind = self.rng.below(10);
        let kind = match kind {
            0..=3 => {
                self.shape.roll(group, false);
                self.rollouts.start(group);
                "spec: rolling update"
            }
            4..=5 => {
                let by = if self.rng.below(2) == 0 { 1 } else { -1 };
                self.shape.scale(group, by);
                self.rollouts.faulted(group);
                "spec: scale"
            }
            6..=7 => {
                self.shape.extra = !self.shape.extra;
                "spec: group added or removed"
            }
            _ => {
                let checked: Vec<&'static str> = self
                    .shape
                    .groups
                    .iter()
                    .filter(|g| g.checked)
                    .map(|g| g.name)
                    .collect();
                let Some(group) = self.rng.pick(&checked).copied() else {
                    return;
                };
                self.shape.roll(group, true);
                self.rollouts.start(group);
                "spec: bad deploy"
            }
        };
        self.changing = true;
        self.write_spec();
        self.applies += 1;
        let log = std::fs::File::create(self.dir.join(format!("apply-{}.log", self.applies)));
        let err = log.as_ref().ok().and_then(|l| l.try_clone().ok());
        let child = self
            .tend(&["apply", "--yes"])
            .stdin(Stdio::null())
            .stdout(log.map_or(Stdio::null(), Stdio::from))
            .stderr(err.map_or(Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tend apply: {e}"));
        self.apply = Some((child, Instant::now()));
        self.count(kind);
    }

    /// Stops the controllers and removes what the project made: undoes what is pending
    /// (resumes what was left stopped, starts etcd members again), then `tend destroy`;
    /// what is still there after it is removed by its tags. What went wrong, in words.
    fn clean_up(&mut self) -> Vec<String> {
        for (_, undo) in std::mem::take(&mut self.undo) {
            if matches!(undo, Undo::Resume(_) | Undo::Member(_)) {
                self.undo_one(undo);
            }
        }
        if let Some((mut child, _)) = self.apply.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.controllers.stop();
        faults::start_dockerd(&self.dockerd_log);
        self.destroyed = true;
        let mut wrong = Vec::new();
        let log = self.dir.join("destroy.log");
        let destroy = std::fs::File::create(&log).and_then(|out| {
            let err = out.try_clone()?;
            self.tend(&["destroy", "--yes"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
        });
        match destroy.map(|mut child| faults::finish(&mut child, Duration::from_secs(180))) {
            Ok(Some(status)) if status.success() => {}
            Ok(Some(_)) => wrong.push(format!(
                "destroy failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
            Ok(None) => wrong.push("destroy did not finish within 180 s".to_owned()),
            Err(e) => wrong.push(format!("cannot run destroy: {e}")),
        }
        let left = world::look(&self.project).instances;
        if !left.is_empty() {
            wrong.push(format!("{} instances left after destroy", left.len()));
            for i in &left {
                faults::remove(i);
            }
        }
        // Exited containers too: nothing of the project stays in the engine.
        faults::remove_containers(&self.project);
        wrong
    }

    /// Samples each controller once it has run [`WARM_UP`] (its caches filled).
    fn sample_controllers(&mut self) {
        for (pid, started) in self.controllers.running() {
            if started.elapsed() >= WARM_UP && !self.first_samples.contains_key(&pid) {
                let sample = vitals::sample(pid);
                self.first_samples.insert(pid, (Instant::now(), sample));
            }
        }
    }

    /// The controller sampled longest ago that still runs: (pid, seconds between its two
    /// samples, first sample, sample now).
    fn vitals(&self) -> Option<(u32, f64, Vitals, Vitals)> {
        let running: Vec<u32> = self.controllers.running().iter().map(|(p, _)| *p).collect();
        let (pid, (at, first)) = self
            .first_samples
            .iter()
            .filter(|(pid, _)| running.contains(pid))
            .min_by_key(|(_, (at, _))| *at)?;
        let now = vitals::sample(*pid);
        Some((*pid, at.elapsed().as_secs_f64(), *first, now))
    }
}

/// Runs one phase for `duration`.
fn run_phase(
    name: &'static str,
    seed: u64,
    duration: Duration,
    cluster: Option<&mut etcd::Cluster>,
) -> Tally {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let project = format!("soak-{name}-{}", std::process::id());
    let store = cluster.as_ref().map(|c| c.url());
    let replicas = if cluster.is_some() { 3 } else { 1 };
    let machine = store.as_ref().map(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    });
    let shape = Shape::first(true, machine);
    let mut phase = Phase {
        name,
        dir: dir.path().to_owned(),
        project,
        store: store.clone(),
        cluster,
        controllers: Controllers {
            dir: dir.path().to_owned(),
            store: None,
            children: Vec::new(),
        },
        before: shape.clone(),
        shape,
        rollouts: Rollouts::default(),
        apply: None,
        undo: Vec::new(),
        rng: Rng(seed),
        seed,
        began: Instant::now(),
        seen: BTreeSet::new(),
        tally: Tally::default(),
        dockerd_log: std::env::temp_dir().join("tend-soak-dockerd.log"),
        changing: true,
        destroyed: false,
        first_samples: BTreeMap::new(),
        alternative: None,
        applies: 0,
    };
    phase.write_spec();
    let out = phase
        .tend(&["apply", "--yes"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "the first apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    phase.controllers = Controllers::start(dir.path(), store, replicas);
    let _ = phase.settle();
    let state_start = vitals::size_of(&dir.path().join(".tend"));
    println!(
        "{}: {} controller(s), converged at {:.1}s; faults for {}s",
        phase.name,
        replicas,
        phase.at_s(),
        duration.as_secs()
    );
    let until = Instant::now() + duration;
    while Instant::now() < until && !interrupted() {
        phase.burst();
        if let Some(took) = phase.settle() {
            phase.tally.converge_s.push(took);
        }
        let pause = phase.rng.millis(500, 3000);
        phase.wait(pause);
    }
    let state_end = vitals::size_of(&dir.path().join(".tend"));
    phase.tally.state_bytes = (state_start, state_end);
    phase.tally.leaks = vitals::state_grown(state_start, state_end);
    if let Some((pid, lived, start, end)) = phase.vitals() {
        phase.tally.leaks.extend(vitals::grown(&start, &end));
        phase.tally.vitals = Some((pid, lived, start, end));
    }
    for what in phase.clean_up() {
        let at_s = phase.at_s();
        phase.tally.violations.push(Violation { at_s, what });
    }
    let tally = std::mem::take(&mut phase.tally);
    drop(phase);
    if !tally.violations.is_empty() {
        // The controllers' logs and the state folder, for whoever looks into it.
        let kept = dir.keep();
        println!("{name}: logs and state kept in {}", kept.display());
    }
    tally
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(index).copied().unwrap_or(0.0)
}

fn report(name: &str, seed: u64, t: &Tally) -> bool {
    println!("\n== {name}: {} bursts", t.bursts);
    println!("{:<44} {:>8}", "fault", "count");
    for (kind, n) in &t.faults {
        println!("{kind:<44} {n:>8}");
    }
    println!(
        "instances started {} (heals, not asked for by a spec change: {})",
        t.started, t.heals
    );
    println!(
        "spec changes whose apply did not end converged (a group paused or rolled back, or the spec not committed): {}",
        t.stopped_applies
    );
    println!(
        "time to converge after a burst: median {:.1}s, p99 {:.1}s, worst {:.1}s (bound {}s)",
        percentile(&t.converge_s, 0.5),
        percentile(&t.converge_s, 0.99),
        percentile(&t.converge_s, 1.0),
        CONVERGE_BOUND.as_secs()
    );
    if let Some((pid, lived, s, e)) = &t.vitals {
        println!(
            "controller {pid}, {lived:.0}s apart (after its first {}s):",
            WARM_UP.as_secs()
        );
        println!("  open files      {:>10} -> {:<10}", s.fds, e.fds);
        println!("  threads         {:>10} -> {:<10}", s.threads, e.threads);
        println!("  resident KiB    {:>10} -> {:<10}", s.rss_kib, e.rss_kib);
    }
    println!(
        ".tend/ bytes      {:>10} -> {:<10}",
        t.state_bytes.0, t.state_bytes.1
    );
    for leak in &t.leaks {
        println!("LEAK ({name}, seed {seed}): {leak}");
    }
    for v in &t.violations {
        println!(
            "BROKEN ({name}, seed {seed}, at {:.1}s): {}",
            v.at_s, v.what
        );
    }
    t.violations.is_empty() && t.leaks.is_empty()
}

fn main() {
    let args = args();
    let image = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    let busybox = Path::new("/bin/busybox").exists();
    if !image || !busybox || !etcd::have("etcd") {
        eprintln!("soak: needs a Docker engine with {IMAGE} (.ci/run builds it), busybox and etcd");
        std::process::exit(1);
    }
    println!(
        "soak: seed {} (repeat with --seed {}), {}s per phase, phases {:?}",
        args.seed,
        args.seed,
        args.duration.as_secs() / args.phases.len() as u64,
        args.phases
    );
    let per_phase = args.duration / args.phases.len() as u32;
    let mut ok = true;
    on_interrupt();
    for name in args.phases.iter().take_while(|_| !interrupted()) {
        let tally = if *name == "etcd" {
            let Some(mut cluster) = etcd::Cluster::start("soak") else {
                std::process::exit(1);
            };
            run_phase(name, args.seed, per_phase, Some(&mut cluster))
        } else {
            run_phase(name, args.seed, per_phase, None)
        };
        ok &= report(name, args.seed, &tally);
    }
    faults::start_dockerd(&std::env::temp_dir().join("tend-soak-dockerd.log"));
    if interrupted() {
        println!("\nsoak: interrupted; what it made was removed");
        std::process::exit(130);
    }
    if !ok {
        println!("\nsoak: a promise broke; repeat with --seed {}", args.seed);
        std::process::exit(1);
    }
    println!("\nsoak: every promise held");
}

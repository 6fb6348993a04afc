//! The faults the soak injects, each undone (where it can be) after a while: SIGKILL and
//! SIGSTOP/SIGCONT of instances, kills and restarts of controllers, a stop and restart of
//! dockerd, kills and restarts of etcd members, health checks made to fail and recover.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::world::{Handle, Instance};

/// Something to undo later.
pub enum Undo {
    /// SIGCONT a stopped process, or unpause a container.
    Resume(Handle),
    /// Put back an instance's `/ok` page.
    Heal(PathBuf, String),
    /// Start controller `index` again.
    Controller(usize),
    /// Start etcd member `index` again.
    Member(usize),
}

/// SIGKILL of a process instance, or `docker kill` of a container.
pub fn kill(i: &Instance) {
    match &i.handle {
        Handle::Process(pid) => signal(*pid, libc::SIGKILL),
        Handle::Container { id, .. } => docker(&["kill", id]),
    }
}

/// Removes an instance by its tags, past tend: SIGKILL to its whole session (its process
/// group), or `docker rm -f`.
pub fn remove(i: &Instance) {
    match &i.handle {
        Handle::Process(pid) => {
            // SAFETY: kill(2) on the process group of a session leader just read from /proc
            // as one of the project's instances.
            unsafe {
                libc::kill(-(*pid as i32), libc::SIGKILL);
            }
        }
        Handle::Container { id, .. } => docker(&["rm", "-f", id]),
    }
}

/// SIGSTOP of a process instance, or `docker pause` of a container.
pub fn stop(i: &Instance) -> Undo {
    match &i.handle {
        Handle::Process(pid) => signal(*pid, libc::SIGSTOP),
        Handle::Container { id, .. } => docker(&["pause", id]),
    }
    Undo::Resume(i.handle.clone())
}

/// SIGCONT, or `docker unpause`; nothing when it is gone.
pub fn resume(handle: &Handle) {
    match handle {
        Handle::Process(pid) => signal(*pid, libc::SIGCONT),
        Handle::Container { id, .. } => docker(&["unpause", id]),
    }
}

/// Makes the instance's health check fail by taking its `/ok` page away: from its working
/// folder (a process) or its mounted files (a container, under `state_dir`).
pub fn fail_health(i: &Instance, state_dir: &Path) -> Option<Undo> {
    let folder = match &i.handle {
        Handle::Process(pid) => std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
        Handle::Container { name, .. } => state_dir.join("docker/files").join(name),
    };
    let page = folder.join("ok");
    let content = std::fs::read_to_string(&page).ok()?;
    std::fs::remove_file(&page).ok()?;
    Some(Undo::Heal(page, content))
}

/// Puts the page back when its folder is still there.
pub fn heal(page: &Path, content: &str) {
    if page.parent().is_some_and(Path::exists) {
        let _ = std::fs::write(page, content);
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a pid just read from /proc as one of the project's instances.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

fn docker(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the engine (SIGTERM to the pid in /var/run/docker.pid, its containers stop with
/// it), waits `down`, starts it again and waits until it answers. Returns how long the
/// engine did not answer.
pub fn restart_dockerd(down: Duration, log: &Path) -> Duration {
    let began = Instant::now();
    if let Some(pid) = dockerd_pid() {
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(down);
    start_dockerd(log);
    began.elapsed()
}

/// Starts dockerd when it does not answer (in a process group of its own, so a Ctrl-C of
/// the soak does not reach it and it outlives the soak), and waits up to a minute until it
/// does.
pub fn start_dockerd(log: &Path) {
    if engine_answers() {
        return;
    }
    if dockerd_pid().is_none_or(|pid| !alive(pid)) {
        let _ = std::fs::remove_file("/var/run/docker.pid");
        let out = std::fs::File::options().create(true).append(true).open(log);
        if let Ok(out) = out {
            let err = out.try_clone().ok();
            use std::os::unix::process::CommandExt;
            let _ = Command::new("dockerd")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err.map_or(Stdio::null(), Stdio::from))
                .process_group(0)
                .spawn();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !engine_answers() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// True when `docker info` answers.
pub fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn dockerd_pid() -> Option<u32> {
    std::fs::read_to_string("/var/run/docker.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Waits for `child` up to `within`, then kills it; its exit status when it exited.
pub fn finish(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Removes the project's containers in any state (`docker rm -f` by its label).
pub fn remove_containers(project: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=tend.project={project}"))
        .output();
    let ids = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for id in ids.unwrap_or_default().split_whitespace() {
        docker(&["rm", "-f", id]);
    }
}

fn alive(pid: u32) -> bool {
    super::world::stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The controllers keeping the project: `tend run` processes, started and killed by pid.
pub struct Controllers {
    pub dir: PathBuf,
    /// `--store` for each, or none (the local store).
    pub store: Option<String>,
    pub children: Vec<Option<(Child, Instant)>>,
}

impl Controllers {
    /// Starts `count` controllers.
    pub fn start(dir: &Path, store: Option<String>, count: usize) -> Controllers {
        let mut c = Controllers {
            dir: dir.to_owned(),
            store,
            children: (0..count).map(|_| None).collect(),
        };
        for index in 0..count {
            c.start_one(index);
        }
        c
    }

    /// Starts controller `index` (when it is not running).
    pub fn start_one(&mut self, index: usize) {
        if self.children[index].is_some() {
            return;
        }
        let mut run = Command::new(env!("CARGO_BIN_EXE_tend"));
        run.arg("run")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", super::etcd::free_port()));
        if let Some(store) = &self.store {
            run.args(["--store", store]);
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("controller-{index}.log")));
        let child = run
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.map_or(Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tend run: {e}"));
        self.children[index] = Some((child, Instant::now()));
    }

    /// SIGKILL of controller `index`.
    pub fn kill(&mut self, index: usize) -> Option<Undo> {
        let (mut child, _) = self.children[index].take()?;
        let _ = child.kill();
        let _ = child.wait();
        Some(Undo::Controller(index))
    }

    /// The pids running now, with when each started.
    pub fn running(&self) -> Vec<(u32, Instant)> {
        self.children
            .iter()
            .flatten()
            .map(|(c, at)| (c.id(), *at))
            .collect()
    }

    /// Stops them all with SIGTERM, and SIGKILL for any still running 30 s later.
    pub fn stop(&mut self) {
        for (mut child, _) in self.children.iter_mut().filter_map(Option::take) {
            signal(child.id(), libc::SIGTERM);
            finish(&mut child, Duration::from_secs(30));
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for (child, _) in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

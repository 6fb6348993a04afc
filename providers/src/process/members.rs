//! The processes of an instance: its leader and everything it started. With a cgroup,
//! every process in it (whatever it did with its session or environment); without one,
//! every process of the session the leader started. Stopping an instance stops them all.

use std::time::{Duration, Instant};

use engine::procfs;

use super::cgroup::InstanceCgroup;
use super::pidfd::Pidfd;

/// How long the processes left after a SIGKILL may take to go.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// One instance's processes.
pub struct Members {
    /// The leader's pid: also its session id.
    pub leader: u32,
    /// The leader's start time in clock ticks.
    pub ticks: u64,
    /// Its cgroups, when it has them.
    pub cgroup: InstanceCgroup,
}

impl Members {
    /// Every process of the instance that runs now (not zombies), the leader included.
    pub fn running(&self) -> Vec<u32> {
        if self.cgroup.is_empty() {
            return session(self.leader, self.ticks);
        }
        self.cgroup
            .processes()
            .into_iter()
            .filter(|pid| procfs::stat(*pid).is_some_and(|s| !s.is_zombie()))
            .collect()
    }

    /// Sends `signal` to every process of the instance; how many it reached.
    fn signal_all(&self, signal: libc::c_int) -> usize {
        self.running()
            .into_iter()
            .filter_map(|pid| {
                let ticks = procfs::stat(pid)?.start_ticks;
                // Through a pidfd opened on the process just listed: never another one.
                Pidfd::open(pid, ticks).map(|fd| fd.signal(signal))
            })
            .filter(|sent| *sent)
            .count()
    }

    /// Waits until no process of the instance runs, up to `deadline`; true when none does.
    async fn gone_by(&self, leader: Option<&Pidfd>, deadline: Instant) -> bool {
        if let Some(fd) = leader {
            let left = deadline.saturating_duration_since(Instant::now());
            if !fd.exited(left).await {
                return false;
            }
        }
        // Looking may mean a scan of /proc (without cgroups): often at first, when processes
        // usually end, then less.
        let mut pause = Duration::from_millis(10);
        loop {
            if self.running().is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Stops the instance whole: SIGTERM to every process, then, after `stop_timeout`,
    /// SIGKILL to what is left; then its cgroups go. Returns the pids that survived even
    /// SIGKILL (none, normally).
    pub async fn stop(&self, stop_timeout: Duration) -> Vec<u32> {
        let leader = Pidfd::open(self.leader, self.ticks);
        if self.signal_all(libc::SIGTERM) > 0 {
            let deadline = Instant::now() + stop_timeout;
            if !self.gone_by(leader.as_ref(), deadline).await {
                if !self.cgroup.kill_all() {
                    self.signal_all(libc::SIGKILL);
                }
                let deadline = Instant::now() + AFTER_KILL;
                // A process may fork between a listing and its signal: kill again until
                // nothing is left.
                while !self
                    .gone_by(None, Instant::now() + Duration::from_millis(200))
                    .await
                    && Instant::now() < deadline
                {
                    if !self.cgroup.kill_all() {
                        self.signal_all(libc::SIGKILL);
                    }
                }
            }
        }
        let left = self.running();
        if left.is_empty() {
            self.cgroup.remove();
        }
        left
    }
}

/// The processes of the session led by `leader` (started at `ticks`). When the pid is now
/// another process's, the session is gone: a session id is never reused while a process of
/// the session lives.
pub fn session(leader: u32, ticks: u64) -> Vec<u32> {
    if procfs::stat(leader).is_some_and(|s| s.start_ticks != ticks) {
        return Vec::new();
    }
    procfs::pids()
        .into_iter()
        .filter(|pid| {
            procfs::stat(*pid).is_some_and(|s| {
                s.session == leader as i32 && s.start_ticks >= ticks && !s.is_zombie()
            })
        })
        .collect()
}

//! Process handles by pidfd: signals and waits reach the process a handle was opened for,
//! or nothing, never a process that reused its pid.

use std::time::Duration;

use engine::procfs;

/// A handle on one process.
pub struct Pidfd {
    fd: std::os::fd::OwnedFd,
}

impl Pidfd {
    /// Opens process `pid` if it is still the one that started at `ticks`.
    pub fn open(pid: u32, ticks: u64) -> Option<Pidfd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just returned to us and is owned by nobody else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        // The pid may have been reused before the descriptor was opened: check it is ours.
        procfs::is_alive(pid, ticks).then_some(Pidfd { fd })
    }

    /// Sends `signal` to the process; false when it is gone.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal takes the descriptor, a signal, a null info and flags.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        sent == 0
    }

    /// True when the process has exited (its descriptor is readable).
    pub fn has_exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no wait.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0
    }

    /// Waits up to `limit` for the process to exit; true when it did.
    pub async fn exited(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.wait()).await.is_ok()
    }

    /// Returns when the process has exited.
    pub async fn wait(&self) {
        use std::os::fd::AsFd;
        let registered = self.fd.as_fd().try_clone_to_owned().ok().and_then(|fd| {
            // SAFETY: the AsyncFd owns its own duplicate of the descriptor for its whole
            // life; nothing else reads or closes it.
            unsafe { tokio::io::unix::AsyncFd::register(fd) }.ok()
        });
        match registered {
            Some(async_fd) => {
                let _ = async_fd.readable().await;
            }
            None => {
                while !self.has_exited() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Returns when process `pid` (started at `ticks`) has exited: its pidfd turns readable.
/// One descriptor per process waited for (not a duplicate: `tend run` waits on every
/// instance). Without pidfd support it falls back to polling `/proc`.
pub async fn wait_for_exit(pid: u32, ticks: u64) {
    if let Some(pidfd) = Pidfd::open(pid, ticks) {
        // SAFETY: the AsyncFd takes the descriptor itself for its whole life; nothing else
        // reads or closes it.
        if let Ok(fd) = unsafe { tokio::io::unix::AsyncFd::register(pidfd.fd) } {
            let _ = fd.readable().await;
            return;
        }
    }
    while procfs::is_alive(pid, ticks) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

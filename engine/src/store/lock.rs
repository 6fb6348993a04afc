//! The exclusive project lock: a kernel lock (`flock`) on `.tend/lock`.
//!
//! The kernel releases the lock when its holder exits, however it exits, so there is no
//! takeover logic and no window in which two processes both believe they hold it. The
//! file's content only names the holder, for messages; it is never trusted for the lock
//! itself, and the file is never removed (removing it would let a second process lock a
//! new file while the first still holds the old one).

use std::fmt;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{now_ms, StoreError};
use crate::procfs;

/// Who holds the lock, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// Its start time in clock ticks, so a reused pid is not taken for the holder.
    pub start_ticks: u64,
    /// The command it runs (`apply`, `run`, `destroy`).
    pub command: String,
    /// Since when, in milliseconds since the Unix epoch.
    pub since: u64,
    /// The machine it runs on, when it is not necessarily this one (an etcd store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl LockHolder {
    /// Who it is, without since when: "`tend run` (pid 12 on web1)".
    pub fn who(&self) -> String {
        match &self.host {
            Some(host) => format!("`tend {}` (pid {} on {host})", self.command, self.pid),
            None => format!("`tend {}` (pid {})", self.command, self.pid),
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = now_ms().saturating_sub(self.since) / 1000;
        write!(f, "{} since {secs}s ago", self.who())
    }
}

/// The lock while held; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    holder: LockHolder,
}

impl LockGuard {
    /// Who holds it (this process).
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Still locked here: clearing the name cannot race with the next holder's write.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// How long a process that lost the race waits for the winner to write its name.
const NAME_WAIT: Duration = Duration::from_secs(2);

/// Takes the lock at `path` for `command`, or says who holds it.
pub(super) fn acquire(path: &Path, command: &str) -> Result<LockGuard, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StoreError::Locked {
                holder: read_holder(path),
            })
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let me = std::process::id();
    let holder = LockHolder {
        pid: me,
        start_ticks: procfs::stat(me).map(|s| s.start_ticks).unwrap_or(0),
        command: command.to_owned(),
        since: now_ms(),
        host: None,
    };
    let text = serde_json::to_string(&holder).map_err(|e| io(std::io::Error::other(e)))?;
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    Ok(LockGuard { file, holder })
}

/// The holder named in the lock file. The winner of a race writes its name right after
/// taking the lock, so an empty file is read again for a moment before giving up.
fn read_holder(path: &Path) -> Option<LockHolder> {
    let deadline = std::time::Instant::now() + NAME_WAIT;
    loop {
        let mut text = String::new();
        let named = File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .ok()
            .and_then(|_| serde_json::from_str::<LockHolder>(&text).ok())
            .filter(|h| procfs::is_alive(h.pid, h.start_ticks));
        if named.is_some() || std::time::Instant::now() >= deadline {
            return named;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Who holds the lock at `path` right now, if anybody does: for commands that only read.
pub(super) fn holder(path: &Path) -> Option<LockHolder> {
    let file = File::options().read(true).write(true).open(path).ok()?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => read_holder(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("lock");
        let guard = acquire(&path, "apply").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(holder(&path).map(|h| h.command), Some("apply".to_owned()));
        match acquire(&path, "apply") {
            Err(StoreError::Locked { holder: Some(h) }) => {
                assert_eq!(h.pid, std::process::id());
                assert!(h.to_string().starts_with("`tend apply` (pid "));
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(guard);
        assert!(path.exists(), "the lock file is never removed");
        assert_eq!(holder(&path), None);
        let taken = acquire(&path, "run").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(taken.holder().command, "run");
    }

    #[test]
    fn stale_content_in_an_unlocked_file_does_not_hold_the_lock() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("lock");
        let someone = LockHolder {
            pid: std::process::id(),
            start_ticks: procfs::stat(std::process::id())
                .map(|s| s.start_ticks)
                .unwrap_or(0),
            command: "apply".into(),
            since: 0,
            host: None,
        };
        std::fs::write(&path, serde_json::to_string(&someone).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let taken = acquire(&path, "run").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(taken.holder().command, "run");
    }
}

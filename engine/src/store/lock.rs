//! The exclusive project lock: a file created with `O_EXCL`, naming its holder.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

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
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = now_ms().saturating_sub(self.since) / 1000;
        write!(
            f,
            "`tend {}` (pid {}) since {secs}s ago",
            self.command, self.pid
        )
    }
}

/// The lock while held; dropping it releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
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
        // Remove the file only if it is still ours.
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<LockHolder>(&t).ok())
            .is_some_and(|h| h == self.holder);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub(super) fn acquire(path: &Path, command: &str) -> Result<LockGuard, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let me = std::process::id();
    let holder = LockHolder {
        pid: me,
        start_ticks: procfs::stat(me).map(|s| s.start_ticks).unwrap_or(0),
        command: command.to_owned(),
        since: now_ms(),
    };
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut file) => {
                let text = serde_json::to_string(&holder).unwrap_or_default();
                file.write_all(text.as_bytes()).map_err(io)?;
                return Ok(LockGuard {
                    path: path.to_owned(),
                    holder,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let current = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<LockHolder>(&t).ok());
                match current {
                    Some(h) if procfs::is_alive(h.pid, h.start_ticks) => {
                        return Err(StoreError::Locked { holder: h });
                    }
                    // The holder is gone (killed, crashed) or the file is unreadable: take over.
                    _ => {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(std::io::Error::other(
        "the lock changed hands while taking it over",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_and_a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("lock");
        let guard = acquire(&path, "apply").unwrap_or_else(|e| panic!("{e}"));
        match acquire(&path, "apply") {
            Err(StoreError::Locked { holder }) => {
                assert_eq!(holder.pid, std::process::id());
                assert!(holder.to_string().starts_with("`tend apply` (pid "));
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(guard);
        assert!(!path.exists());

        let dead = LockHolder {
            pid: std::process::id(),
            start_ticks: 1, // not this process's start: it stands for a holder that is gone
            command: "apply".into(),
            since: 0,
        };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let taken = acquire(&path, "run").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(taken.holder().command, "run");
    }
}

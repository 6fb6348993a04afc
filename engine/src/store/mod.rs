//! The store: the last applied spec (with a serial and a lineage id), the history of
//! applied versions, the rollouts that failed, and the project lock. By default it is the
//! local folder `.tend/` beside the spec; with `--store etcd://...` the same record lives in
//! etcd ([`etcd`]), where replicated controllers share it.
//!
//! In the local folder,
//! every write goes to a temporary file that is synced, renamed into place, and the folder
//! synced after it, so a crash or a power cut leaves either the old file or the new one. The
//! store is a record of intent; instances are never found from it.
//!
//! Both backends carry a format number ([`crate::format`]): `.tend/format` here, the
//! `format` key in etcd. A store of an older format (tend 0.1.0 wrote none) is read as it
//! is and migrated to this tend's format by its next write; one of a newer format is
//! refused ([`StoreError::NewerFormat`]) before anything in it is read or written.

pub mod etcd;
mod lock;
mod rollouts;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::format::{self, NewerFormat};
use crate::spec::Spec;

pub use etcd::EtcdStore;
pub use lock::{LockGuard, LockHolder};
pub use rollouts::{FailedRollout, Version};

/// How many applied versions the history keeps: a commit drops the ones older than that,
/// so the store does not grow with every apply. Rollbacks and the controller look back at
/// most 50.
pub const HISTORY_KEPT: u64 = 100;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another tend holds the project.
    #[error("the project is locked by {}: wait for it, or check it is still running", holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "another tend that did not say who it is".to_owned()))]
    Locked {
        /// Who holds it, when the lock file names a live process.
        holder: Option<LockHolder>,
    },
    /// A file could not be read or written.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The etcd cluster could not be reached or refused a call.
    #[error("cannot use the etcd store at {endpoints}: {detail}")]
    Etcd {
        /// The endpoints.
        endpoints: String,
        /// What failed.
        detail: String,
    },
    /// A spec too large for one etcd transaction.
    #[error("the spec is too large for one etcd transaction: {bytes} bytes (its changed groups, and the whole spec again for the history) in {operations} operations, and etcd takes at most {max_bytes} bytes (1.5 MiB) and {max_ops} operations per request; split the project", max_bytes = etcd::MAX_REQUEST_BYTES, max_ops = etcd::MAX_TXN_OPS)]
    TooLarge {
        /// Bytes of keys and values the commit would write.
        bytes: usize,
        /// Compares and operations it would make.
        operations: usize,
    },
    /// The spec changed in the store since it was read.
    #[error("the spec in the store changed since serial {read} was read (another apply committed meanwhile): nothing was written; run the command again")]
    Conflict {
        /// The serial that was read.
        read: u64,
    },
    /// This process no longer leads: its write was refused.
    #[error("this process no longer leads the project: its write was refused (fenced)")]
    Deposed,
    /// The store was written by a newer tend, in a format this one does not know: nothing
    /// in it was read or written.
    #[error(transparent)]
    NewerFormat(#[from] NewerFormat),
    /// A file is not what tend wrote.
    #[error("{path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// One applied version of the spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// Identifies this store's history; a new store gets a new lineage.
    pub lineage: String,
    /// Counts applied versions, from 1.
    pub serial: u64,
    /// When it was applied, in milliseconds since the Unix epoch.
    pub applied_at: u64,
    /// The spec (secrets appear by name only).
    pub spec: Spec,
}

/// The store of one project: its local state folder, and etcd when `--store` names it.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    remote: Option<Remote>,
}

/// The etcd store of one project.
#[derive(Clone, Debug)]
struct Remote {
    etcd: Arc<EtcdStore>,
    project: String,
}

/// The project lock while held: a kernel lock on the local folder, or, in etcd, the
/// project's election won by this process.
pub enum ProjectLock {
    /// `.tend/lock`.
    Local(LockGuard),
    /// Leadership of the project in etcd; dropping it steps down.
    Leader(Arc<etcd::Leadership>),
}

impl ProjectLock {
    /// The leadership behind the lock, when it is one: what fences provider calls.
    pub fn leadership(&self) -> Option<Arc<etcd::Leadership>> {
        match self {
            ProjectLock::Local(_) => None,
            ProjectLock::Leader(l) => Some(l.clone()),
        }
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        if let ProjectLock::Leader(leadership) = self {
            leadership.step_down_now();
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `bytes` to `path` durably: a temporary file in the same folder, synced, renamed
/// over `path`, then the folder synced so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = File::create(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io(e));
    }
    std::fs::rename(&temp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

impl Store {
    /// The store in `dir` (created on first write).
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_owned(),
            remote: None,
        }
    }

    /// The store of `project` in etcd, with `dir` for what stays on this machine.
    pub fn etcd(dir: &Path, etcd: Arc<EtcdStore>, project: &str) -> Store {
        Store {
            dir: dir.to_owned(),
            remote: Some(Remote {
                etcd,
                project: project.to_owned(),
            }),
        }
    }

    /// The etcd store, when this is one.
    pub fn remote(&self) -> Option<&Arc<EtcdStore>> {
        self.remote.as_ref().map(|r| &r.etcd)
    }

    /// A number that changes when a new spec is committed: from the state file's inode and
    /// modification time here, the serial the watch saw in etcd.
    pub fn spec_mark(&self) -> Option<u64> {
        match &self.remote {
            Some(r) => Some(r.etcd.spec_mark()),
            // Every commit renames a new file into place: a new inode, whatever the
            // clock's resolution.
            None => std::fs::metadata(self.state_file()).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino().rotate_left(32)
                    ^ (m.mtime() as u64).wrapping_mul(1_000_000_000)
                    ^ m.mtime_nsec() as u64
            }),
        }
    }

    /// Takes the project for `command`, or says who holds it: the kernel lock here; in
    /// etcd, the project's election (won at once, or refused naming the leader).
    pub fn take(&self, command: &str) -> Result<ProjectLock, StoreError> {
        match &self.remote {
            None => self.lock(command).map(ProjectLock::Local),
            Some(r) => {
                self.check_format()?;
                r.etcd
                    .hold(command)
                    .map(|l| ProjectLock::Leader(Arc::new(l)))
            }
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses a store written by a newer tend: the local folder's format, and, with etcd,
    /// the project's format there. Call it before anything else touches the store or the
    /// folder (the lock, the providers' files); every read and write checks again.
    pub fn check_format(&self) -> Result<(), StoreError> {
        self.check_folder_format()?;
        if let Some(r) = &self.remote {
            r.etcd.format()?;
        }
        Ok(())
    }

    /// Refuses a local folder written by a newer tend, without a call to etcd: what an
    /// etcd store checks at once, before the providers touch the folder. The etcd format is
    /// checked by the first call that reads or writes there ([`Store::take`] and
    /// [`Store::last_applied`] check it first).
    pub fn check_folder_format(&self) -> Result<(), StoreError> {
        self.local_format().map(|_| ())
    }

    fn format_file(&self) -> PathBuf {
        self.dir.join("format")
    }

    /// The local folder's format: 1 without `.tend/format` (tend 0.1.0 wrote none), an
    /// error when it is newer than this tend reads or is not a number.
    fn local_format(&self) -> Result<u32, StoreError> {
        let path = self.format_file();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(1),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let Some(found) = format::parse_marker(&text) else {
            return Err(StoreError::Damaged {
                path,
                detail: format!(
                    "it should hold the store's format, a number from 1 up; if only tends of \
                     this version keep the project, write {} there",
                    format::LOCAL_STATE
                ),
            });
        };
        format::check(format::Kind::LocalState, found, || {
            format!("the state in {}", self.dir.display())
        })?;
        Ok(found as u32)
    }

    /// Migrates the local folder from format `found` to this tend's, before a write (under
    /// the commit lock, or the project lock for the rollouts): what it holds first, then
    /// the marker, so a migration cut short is done again. Format 2 holds what format 1
    /// held, so the marker is all there is to write.
    fn migrate_local(&self, found: u32) -> Result<(), StoreError> {
        if found >= format::LOCAL_STATE {
            return Ok(());
        }
        write_atomic(
            &self.format_file(),
            format::marker(format::LOCAL_STATE).as_bytes(),
        )
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn history_file(&self, serial: u64) -> PathBuf {
        self.dir.join("history").join(format!("{serial:06}.json"))
    }

    /// Takes the exclusive project lock for `command`, or says who holds it. The kernel
    /// releases it when this process ends, however it ends.
    pub fn lock(&self, command: &str) -> Result<LockGuard, StoreError> {
        self.local_format()?;
        lock::acquire(&self.dir.join("lock"), command)
    }

    /// Who holds the project lock now, if anybody.
    pub fn lock_holder(&self) -> Option<LockHolder> {
        lock::holder(&self.dir.join("lock"))
    }

    /// The last applied version, if any.
    pub fn last_applied(&self) -> Result<Option<Applied>, StoreError> {
        self.local_format()?;
        match &self.remote {
            Some(r) => r.etcd.last_applied(&r.project),
            None => read_json(&self.state_file()),
        }
    }

    /// The version applied as `serial`, if the history still has it.
    pub fn applied(&self, serial: u64) -> Result<Option<Applied>, StoreError> {
        self.local_format()?;
        match &self.remote {
            Some(r) => r.etcd.applied(serial),
            None => read_json(&self.history_file(serial)),
        }
    }

    /// Records `spec` as applied: the next serial, same lineage, and a copy in history.
    /// Commits are serialised by a short kernel lock of their own, so two commits at once
    /// (an apply handing a spec to `tend run` while `--watch` commits one) never share a
    /// serial. A store of an older format is migrated to this tend's first; one of a newer
    /// format is refused with nothing written.
    pub fn commit(&self, spec: &Spec) -> Result<Applied, StoreError> {
        if let Some(r) = &self.remote {
            // The folder holds only the providers' files then: marked when it exists.
            let found = self.local_format()?;
            if self.dir.is_dir() {
                self.migrate_local(found)?;
            }
            return r.etcd.commit(spec);
        }
        // Checked before the commit lock is made, and again under it.
        self.local_format()?;
        let path = self.dir.join("commit.lock");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let guard = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        guard.lock().map_err(io)?;
        let found = self.local_format()?;
        self.migrate_local(found)?;
        let previous = self.last_applied()?;
        let applied = Applied {
            lineage: previous
                .as_ref()
                .map(|p| p.lineage.clone())
                .unwrap_or_else(new_lineage),
            serial: previous.as_ref().map_or(1, |p| p.serial + 1),
            applied_at: now_ms(),
            spec: spec.clone(),
        };
        let text = serde_json::to_string_pretty(&applied).map_err(|e| StoreError::Damaged {
            path: self.state_file(),
            detail: e.to_string(),
        })?;
        write_atomic(&self.history_file(applied.serial), text.as_bytes())?;
        write_atomic(&self.state_file(), text.as_bytes())?;
        self.compact_history(applied.serial);
        let _ = guard.unlock();
        Ok(applied)
    }

    /// Drops the history's versions that fell out of the last [`HISTORY_KEPT`]. A file
    /// that cannot be removed stays for the next commit to try again.
    fn compact_history(&self, newest: u64) {
        let Some(oldest_kept) = newest.checked_sub(HISTORY_KEPT - 1) else {
            return;
        };
        for serial in self.history().into_iter().take_while(|s| *s < oldest_kept) {
            let _ = std::fs::remove_file(self.history_file(serial));
        }
    }

    /// Serials in the history, oldest first.
    pub fn history(&self) -> Vec<u64> {
        if let Some(r) = &self.remote {
            return r.etcd.history();
        }
        let mut serials: Vec<u64> = std::fs::read_dir(self.dir.join("history"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.path().file_stem()?.to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        serials.sort_unstable();
        serials
    }

    /// Rollouts that failed, by group.
    pub fn failed_rollouts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, FailedRollout>, StoreError> {
        self.local_format()?;
        if let Some(r) = &self.remote {
            return r.etcd.failed_rollouts();
        }
        Ok(read_json(&self.dir.join("rollouts.json"))?.unwrap_or_default())
    }

    /// Records the rollouts that failed, by group.
    pub fn save_failed_rollouts(
        &self,
        rollouts: &std::collections::BTreeMap<String, FailedRollout>,
    ) -> Result<(), StoreError> {
        let found = self.local_format()?;
        if let Some(r) = &self.remote {
            return r.etcd.save_failed_rollouts(rollouts);
        }
        self.migrate_local(found)?;
        let path = self.dir.join("rollouts.json");
        let text = serde_json::to_string_pretty(rollouts).map_err(|e| StoreError::Damaged {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_atomic(&path, text.as_bytes())
    }
}

/// Reads a JSON file tend wrote; a missing file is `None`, a damaged one an error.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Damaged {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A lineage id: unique enough to tell two stores apart (time in nanoseconds and pid).
pub(crate) fn new_lineage() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{nanos}-{}", std::process::id());
    crate::spec::sha256_hex(seed.as_bytes())[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(project: &str) -> Spec {
        Spec {
            project: project.to_owned(),
            groups: vec![],
            ports: Default::default(),
        }
    }

    #[test]
    fn commits_count_up_in_one_lineage_and_keep_history() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(&dir.path().join(".tend"));
        assert_eq!(store.last_applied().ok().flatten(), None);
        let first = store.commit(&spec("a")).unwrap_or_else(|e| panic!("{e}"));
        let second = store.commit(&spec("b")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((first.serial, second.serial), (1, 2));
        assert_eq!(first.lineage, second.lineage);
        assert_eq!(
            store.last_applied().ok().flatten().map(|a| a.spec.project),
            Some("b".into())
        );
        assert_eq!(
            store.applied(1).ok().flatten().map(|a| a.spec.project),
            Some("a".into())
        );
        assert_eq!(store.history(), [1, 2]);
        let leftovers: Vec<_> = std::fs::read_dir(store.dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            leftovers
                .iter()
                .all(|n| !n.to_string_lossy().ends_with(".tmp")),
            "{leftovers:?}"
        );
    }

    #[test]
    fn the_history_keeps_only_the_newest_versions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(&dir.path().join(".tend"));
        for _ in 0..HISTORY_KEPT + 5 {
            store.commit(&spec("a")).unwrap_or_else(|e| panic!("{e}"));
        }
        let kept = store.history();
        assert_eq!(kept.len() as u64, HISTORY_KEPT);
        assert_eq!(kept.first(), Some(&6));
        assert_eq!(kept.last(), Some(&(HISTORY_KEPT + 5)));
        assert_eq!(store.applied(5).ok().flatten(), None);
    }

    #[test]
    fn concurrent_commits_never_share_a_serial() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(dir.path());
        let serials: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| store.commit(&spec("p")).map(|a| a.serial).unwrap_or(0)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        let mut sorted = serials.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=8).collect::<Vec<u64>>(), "{serials:?}");
    }

    /// A copy of the `.tend/` tend 0.1.0 left after an apply (state format 1).
    fn store_of_tend_0_1_0() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/formats/tend-0.1.0/local/dot-tend");
        copy_tree(&fixture, dir.path());
        dir
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
        for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{from:?}: {e}")) {
            let entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// Every file under `dir` with its bytes.
    fn contents(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        let mut all = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                all.extend(contents(&entry.path()));
            } else {
                all.insert(
                    entry.path(),
                    std::fs::read(entry.path()).unwrap_or_default(),
                );
            }
        }
        all
    }

    #[test]
    fn a_store_of_tend_0_1_0_is_read_then_migrated_by_its_next_commit() {
        let dir = store_of_tend_0_1_0();
        let store = Store::new(dir.path());
        assert!(store.check_format().is_ok());
        let before = store.last_applied().ok().flatten();
        assert_eq!(
            before.as_ref().map(|a| (a.lineage.as_str(), a.serial)),
            Some(("e7fce16e67cd4e05", 1))
        );
        assert_eq!(
            before.as_ref().map(|a| a.spec.groups.len()),
            Some(2),
            "{before:?}"
        );
        assert!(
            !dir.path().join("format").exists(),
            "reading migrates nothing"
        );
        let spec = before.map(|a| a.spec).unwrap_or_else(|| spec("x"));
        let applied = store.commit(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (applied.lineage.as_str(), applied.serial),
            ("e7fce16e67cd4e05", 2)
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("format")).ok(),
            Some(format!("{}\n", format::LOCAL_STATE))
        );
        assert_eq!(store.history(), [1, 2]);
        assert_eq!(store.applied(1).ok().flatten().map(|a| a.spec), Some(spec));
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_and_never_written() {
        let dir = store_of_tend_0_1_0();
        let newer = format::LOCAL_STATE + 1;
        std::fs::write(dir.path().join("format"), format::marker(newer))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_file(dir.path().join("lock")).unwrap_or_else(|e| panic!("{e}"));
        let before = contents(dir.path());
        let store = Store::new(dir.path());
        let newer_format = |e: StoreError| match e {
            StoreError::NewerFormat(n) => n.found == u64::from(newer),
            other => panic!("not a newer format: {other}"),
        };
        assert!(store.check_format().err().is_some_and(newer_format));
        assert!(store.take("apply").err().is_some_and(newer_format));
        assert!(store.lock("apply").err().is_some_and(newer_format));
        assert!(store.last_applied().err().is_some_and(newer_format));
        assert!(store.applied(1).err().is_some_and(newer_format));
        assert!(store.failed_rollouts().err().is_some_and(newer_format));
        assert!(store.commit(&spec("x")).err().is_some_and(newer_format));
        assert!(store
            .save_failed_rollouts(&Default::default())
            .err()
            .is_some_and(newer_format));
        let message = store.check_format().err().map(|e| e.to_string());
        assert_eq!(
            message,
            Some(format!(
                "the state in {} was written by a newer tend (state format {newer}; this tend reads up to {}): nothing was read or written; upgrade tend (`tend --version` shows this one)",
                dir.path().display(),
                format::LOCAL_STATE
            ))
        );
        assert_eq!(before, contents(dir.path()));
        assert!(!dir.path().join("lock").exists());
    }

    #[test]
    fn a_format_marker_that_is_not_a_number_is_damage_not_a_format() {
        let dir = store_of_tend_0_1_0();
        std::fs::write(dir.path().join("format"), "two\n").unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(dir.path());
        let err = store.commit(&spec("x")).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("format is damaged")),
            "{err:?}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("format"))
                .ok()
                .as_deref(),
            Some("two\n")
        );
    }

    #[test]
    fn a_damaged_state_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("state.json"), "{ not json")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Store::new(dir.path())
            .last_applied()
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("state.json is damaged")));
    }
}

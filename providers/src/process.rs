//! The `process` provider: each instance is a local process in its own session.
//!
//! Tags travel in the process environment (`TEND_PROJECT`, `TEND_GROUP`, `TEND_SLOT`,
//! `TEND_HASH`), set atomically by `exec`, so observed state is rebuilt from `/proc` alone:
//! deleting the state folder loses no instance. An instance id is `<pid>-<start ticks>`, so
//! a reused pid is never mistaken for an old instance. A small record file remembers
//! instances that died, so a plan can say "heal" rather than "create"; it is never the only
//! copy of anything that runs.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use engine::procfs;
use engine::provider::{
    no_settings, require_tags, InstanceState, InstanceTags, ObservedInstance, Provider,
    ProviderError, ProviderEvent, ProvisionRequest, Selector,
};
use serde::{Deserialize, Serialize};

const NAME: &str = "process";
const ENV_PROJECT: &str = "TEND_PROJECT";
const ENV_GROUP: &str = "TEND_GROUP";
const ENV_SLOT: &str = "TEND_SLOT";
const ENV_HASH: &str = "TEND_HASH";
const ENV_ADDRESS: &str = "TEND_ADDRESS";
const ENV_STOP_TIMEOUT: &str = "TEND_STOP_TIMEOUT_MS";
/// Variables passed through from tend's own environment; nothing else is inherited, so a
/// secret given to tend reaches only the instances whose flavor asks for it.
const PASS_THROUGH: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "USER"];

fn backend(detail: String) -> ProviderError {
    ProviderError::Backend {
        provider: NAME.to_owned(),
        detail,
        source: None,
    }
}

/// What the record file keeps of an instance: enough to report it dead.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    tags: InstanceTags,
    address: Option<String>,
    started_at: u64,
    log: PathBuf,
    /// The name of its folder of secret files in memory, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secrets: Option<String>,
}

/// One line of the record log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogLine {
    /// An instance was started.
    Start(Record),
    /// An instance was destroyed.
    Gone {
        /// Its id.
        id: String,
    },
}

/// Local processes, with logs and records under `<state_dir>/process/`.
pub struct ProcessProvider {
    dir: PathBuf,
    /// Children this tend started, kept so their exits are reaped (no zombies).
    children: Mutex<HashMap<u32, Child>>,
    /// Held while the record log is appended to or rewritten.
    records: Mutex<()>,
    /// Where new instances are announced to a running `watch`.
    watched: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, u32, u64)>>>,
}

/// Splits an instance id into pid and start ticks.
fn parse_id(id: &str) -> Option<(u32, u64)> {
    let (pid, ticks) = id.split_once('-')?;
    Some((pid.parse().ok()?, ticks.parse().ok()?))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ProcessProvider {
    /// A process provider keeping logs and records under `state_dir/process/`.
    pub fn new(state_dir: &Path) -> Self {
        ProcessProvider {
            dir: state_dir.join("process"),
            children: Mutex::new(HashMap::new()),
            records: Mutex::new(()),
            watched: Mutex::new(None),
        }
    }

    fn records_file(&self) -> PathBuf {
        self.dir.join("instances.jsonl")
    }

    /// Folds the record log: `start` lines add an instance, `gone` lines remove it.
    fn load_records(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(self.records_file()).unwrap_or_default();
        let mut records: Vec<Record> = Vec::new();
        for line in text.lines() {
            match serde_json::from_str::<LogLine>(line) {
                Ok(LogLine::Start(record)) => records.push(record),
                Ok(LogLine::Gone { id }) => records.retain(|r| r.id != id),
                // A torn last line (a crash mid-write) is skipped, never fatal.
                Err(_) => {}
            }
        }
        records
    }

    /// Appends one line to the record log with a single write.
    fn append(&self, line: &LogLine) -> Result<(), ProviderError> {
        use std::io::Write;
        let _guard = self
            .records
            .lock()
            .map_err(|_| backend("record lock poisoned".into()))?;
        let io = |e: std::io::Error| {
            backend(format!(
                "cannot write {}: {e}",
                self.records_file().display()
            ))
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut text = serde_json::to_string(line).map_err(|e| io(std::io::Error::other(e)))?;
        text.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.records_file())
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)
    }

    /// Rewrites the log with only the records still wanted, when gone lines pile up.
    fn compact(&self) -> Result<(), ProviderError> {
        let _guard = self
            .records
            .lock()
            .map_err(|_| backend("record lock poisoned".into()))?;
        let text = std::fs::read_to_string(self.records_file()).unwrap_or_default();
        let lines = text.lines().count();
        let records = self.load_records();
        if lines < 64 || lines < records.len() * 2 {
            return Ok(());
        }
        let io = |e: std::io::Error| {
            backend(format!(
                "cannot write {}: {e}",
                self.records_file().display()
            ))
        };
        let mut out = String::new();
        for record in records {
            let line = serde_json::to_string(&LogLine::Start(record))
                .map_err(|e| io(std::io::Error::other(e)))?;
            out.push_str(&line);
            out.push('\n');
        }
        let temp = self.records_file().with_extension("jsonl.tmp");
        std::fs::write(&temp, out).map_err(io)?;
        std::fs::rename(&temp, self.records_file()).map_err(io)
    }

    /// Reaps children that exited, so they do not linger as zombies. Only children that
    /// `/proc` shows as exited are waited for: `waitpid` on a live pid scans every child, and
    /// doing that for each of hundreds of children would cost more than the whole apply.
    fn reap_exited(&self) {
        if let Ok(mut children) = self.children.lock() {
            children.retain(|pid, child| {
                let running = procfs::stat(*pid).is_some_and(|s| !s.is_zombie());
                running || matches!(child.try_wait(), Ok(None))
            });
        }
    }

    /// Reaps child `pid` once it has exited.
    fn reap_one(&self, pid: u32) {
        if let Ok(mut children) = self.children.lock() {
            if let Some(mut child) = children.remove(&pid) {
                if !matches!(child.try_wait(), Ok(Some(_))) {
                    children.insert(pid, child);
                }
            }
        }
    }

    /// Waits until the process behind `pidfd` has exited, up to `limit`, and reaps it.
    async fn wait_gone(&self, pidfd: &Pidfd, limit: Duration) -> bool {
        let exited = pidfd.exited(limit).await;
        if exited {
            self.reap_one(pidfd.pid);
        }
        exited
    }
}

/// A process handle by pidfd: signals and waits reach the process it was opened for, or
/// nothing, never a process that reused its pid.
struct Pidfd {
    pid: u32,
    ticks: u64,
    fd: std::os::fd::OwnedFd,
}

impl Pidfd {
    /// Opens the process `pid` if it is still the one that started at `ticks`.
    fn open(pid: u32, ticks: u64) -> Option<Pidfd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just returned to us and is owned by nobody else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        // The pid may have been reused before the descriptor was opened: check it is ours.
        procfs::is_alive(pid, ticks).then_some(Pidfd { pid, ticks, fd })
    }

    /// Sends `signal` to the process itself.
    fn signal(&self, signal: libc::c_int) -> bool {
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

    /// Sends `signal` to every member of the process's group, then to the process itself.
    /// The group goes first: a shell leader that dies at once must not leave its children
    /// unsignalled.
    fn signal_group(&self, signal: libc::c_int) {
        signal_leftovers(self.pid, self.ticks, signal);
        self.signal(signal);
    }

    /// True when the process has exited (its descriptor is readable).
    fn has_exited(&self) -> bool {
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
    async fn exited(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.wait()).await.is_ok()
    }

    /// Returns when the process has exited.
    async fn wait(&self) {
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

/// Sends `signal` to process group `pgid`, led by the instance's process that started at
/// `ticks`, which may be gone. A group id is never reused while a member of the group
/// lives; once the group is empty, its number can only come back as a new process with that
/// pid, so the group is signalled only when no other process holds the pid.
fn signal_leftovers(pgid: u32, ticks: u64, signal: libc::c_int) {
    let reused = procfs::stat(pgid).is_some_and(|s| s.start_ticks != ticks);
    if !reused {
        // SAFETY: kill only sends a signal, to the instance's own process group.
        unsafe { libc::kill(-(pgid as libc::pid_t), signal) };
    }
}

/// The working folder of an instance: its `workdir`, or one under the state folder.
fn workdir(dir: &Path, request: &ProvisionRequest) -> PathBuf {
    match &request.workdir {
        Some(dir) => PathBuf::from(dir),
        None => dir
            .join("run")
            .join(format!("{}-{}", request.group, request.slot)),
    }
}

/// Starts the instance's process in a session of its own, with its files, environment and
/// log. Blocking: runs on the blocking pool.
/// A name for an instance's secret files folder: its tags and the time, unique enough.
fn secrets_name(request: &ProvisionRequest) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let t = &request.tags;
    format!("process-{}-{}-{}-{nanos}", t.project, t.group, t.slot)
}

/// Writes the instance's secret files to memory and links them from its working folder.
fn link_secrets(
    workdir: &Path,
    request: &ProvisionRequest,
    name: &str,
) -> Result<(), ProviderError> {
    let secrets = crate::files::write_secrets(NAME, name, &request.secret_files)?;
    for path in request.secret_files.keys() {
        let link = workdir.join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| backend(format!("cannot create {}: {e}", parent.display())))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(secrets.join(path), &link)
            .map_err(|e| backend(format!("cannot link {}: {e}", link.display())))?;
    }
    Ok(())
}

fn spawn(
    dir: &Path,
    request: &ProvisionRequest,
    log: &Path,
    secrets: Option<&str>,
) -> Result<Child, ProviderError> {
    let Some((program, args)) = request.command.split_first() else {
        return Err(ProviderError::InvalidProps {
            provider: NAME.to_owned(),
            detail: format!("group {:?} has no command to run", request.group),
        });
    };
    let workdir = workdir(dir, request);
    std::fs::create_dir_all(&workdir).map_err(|e| {
        backend(format!(
            "cannot create working folder {}: {e}",
            workdir.display()
        ))
    })?;
    crate::files::write_into(NAME, &workdir, &request.files)?;
    if let Some(name) = secrets {
        link_secrets(&workdir, request, name)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| backend(format!("cannot open log {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| backend(format!("cannot open log {}: {e}", log.display())))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(
            PASS_THROUGH
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(&request.env)
        .env(ENV_PROJECT, &request.tags.project)
        .env(ENV_GROUP, &request.tags.group)
        .env(ENV_SLOT, &request.tags.slot)
        .env(ENV_HASH, &request.tags.hash)
        .env(
            ENV_STOP_TIMEOUT,
            request.stop_timeout.as_millis().to_string(),
        )
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(address) = &request.address {
        command.env(ENV_ADDRESS, address);
    }
    // SAFETY: setsid is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| ProviderError::Backend {
        provider: NAME.to_owned(),
        detail: format!(
            "cannot start {program:?} for {}/{}",
            request.group, request.slot
        ),
        source: Some(Box::new(e)),
    })
}

/// Returns when process `pid` (started at `ticks`) has exited: its pidfd turns readable.
/// Without pidfd support it falls back to polling `/proc`.
async fn wait_for_exit(pid: u32, ticks: u64) {
    match Pidfd::open(pid, ticks) {
        Some(pidfd) => pidfd.wait().await,
        None => {
            while procfs::is_alive(pid, ticks) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one process as an instance of `project`, if it is one. A session leader whose
/// environment cannot be read right now (it is in the middle of an `exec`) is taken from
/// the records, where it was written when it started.
fn observe_pid(pid: u32, project: &str, records: &[Record]) -> Option<ObservedInstance> {
    let stat = procfs::stat(pid)?;
    // An instance leads its own session; its children inherit the tags in their environment
    // but are part of the instance, not instances of their own.
    if stat.is_zombie() || stat.session != pid as i32 {
        return None;
    }
    let id = format!("{pid}-{}", stat.start_ticks);
    let env: BTreeMap<String, String> = procfs::environ(pid)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let started_at = procfs::start_time_ms(stat.start_ticks);
    if env.get(ENV_PROJECT).map(String::as_str) != Some(project) {
        let record = records
            .iter()
            .find(|r| r.id == id && r.tags.project == project)?;
        return Some(ObservedInstance {
            id,
            tags: record.tags.clone(),
            labels: BTreeMap::new(),
            address: record.address.clone(),
            state: InstanceState::Running,
            started_at,
        });
    }
    let tag = |k: &str| env.get(k).cloned().unwrap_or_default();
    Some(ObservedInstance {
        id,
        tags: InstanceTags {
            project: tag(ENV_PROJECT),
            group: tag(ENV_GROUP),
            slot: tag(ENV_SLOT),
            hash: tag(ENV_HASH),
        },
        labels: BTreeMap::new(),
        address: env.get(ENV_ADDRESS).cloned(),
        state: InstanceState::Running,
        started_at,
    })
}

#[async_trait]
impl Provider for ProcessProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate(&self, props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        no_settings(NAME, props)
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(NAME, &request)?;
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| backend(format!("cannot create {}: {e}", logs.display())))?;
        let log = logs.join(format!("{}-{}.log", request.group, request.slot));
        let (dir, log_path, req) = (self.dir.clone(), log.clone(), request.clone());
        let secrets = (!request.secret_files.is_empty()).then(|| secrets_name(&request));
        let name = secrets.clone();
        let spawned =
            tokio::task::spawn_blocking(move || spawn(&dir, &req, &log_path, name.as_deref()))
                .await
                .map_err(|e| backend(format!("starting the process failed: {e}")))
                .and_then(|r| r);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(name) = &secrets {
                    crate::files::remove_secrets(name);
                }
                return Err(e);
            }
        };
        let pid = child.id();
        let stat =
            procfs::stat(pid).ok_or_else(|| backend(format!("process {pid} vanished at start")))?;
        let id = format!("{pid}-{}", stat.start_ticks);
        if let Ok(mut children) = self.children.lock() {
            children.insert(pid, child);
        }
        if let Some(watch) = self.watched.lock().ok().and_then(|w| w.clone()) {
            let _ = watch.send((id.clone(), pid, stat.start_ticks));
        }
        let record = Record {
            id: id.clone(),
            tags: request.tags.clone(),
            address: request.address.clone(),
            started_at: now_ms(),
            log,
            secrets,
        };
        self.append(&LogLine::Start(record))?;
        Ok(id)
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        let (pid, ticks) = parse_id(id).ok_or_else(|| ProviderError::NotFound {
            provider: NAME.to_owned(),
            id: id.to_owned(),
        })?;
        let record = self.load_records().into_iter().find(|r| r.id == id);
        let known = record.is_some();
        let pidfd = Pidfd::open(pid, ticks);
        let alive = pidfd.is_some();
        if let Some(pidfd) = pidfd {
            let stop_timeout = procfs::environ(pid)
                .and_then(|env| env.into_iter().find(|(k, _)| k == ENV_STOP_TIMEOUT))
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(10_000);
            // The instance leads its own session and process group: signal the whole group.
            pidfd.signal_group(libc::SIGTERM);
            if !self
                .wait_gone(&pidfd, Duration::from_millis(stop_timeout))
                .await
            {
                pidfd.signal_group(libc::SIGKILL);
                if !self.wait_gone(&pidfd, Duration::from_secs(5)).await {
                    return Err(backend(format!("process {pid} survived SIGKILL")));
                }
            }
            // What the instance started and left behind in its group goes with it, as a
            // container's processes go with the container.
            signal_leftovers(pid, ticks, libc::SIGKILL);
        }
        if !alive && !known {
            return Err(ProviderError::NotFound {
                provider: NAME.to_owned(),
                id: id.to_owned(),
            });
        }
        if let Some(name) = record.and_then(|r| r.secrets) {
            crate::files::remove_secrets(&name);
        }
        self.append(&LogLine::Gone { id: id.to_owned() })?;
        self.compact()
    }

    async fn alive(&self, id: &str, _selector: &Selector) -> Result<bool, ProviderError> {
        Ok(parse_id(id).is_some_and(|(pid, ticks)| procfs::is_alive(pid, ticks)))
    }

    /// Exits are noticed at once: one pidfd per instance, readable when the process ends.
    async fn watch(
        &self,
        selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        let (events, receiver) = tokio::sync::mpsc::channel(1024);
        let (announce, mut announced) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut watched) = self.watched.lock() {
            *watched = Some(announce.clone());
        }
        for instance in self.describe(selector).await? {
            if let (true, Some((pid, ticks))) = (instance.state.is_live(), parse_id(&instance.id)) {
                let _ = announce.send((instance.id.clone(), pid, ticks));
            }
        }
        tokio::spawn(async move {
            let mut exits = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    next = announced.recv() => {
                        let Some((id, pid, ticks)) = next else { break };
                        exits.spawn(async move {
                            wait_for_exit(pid, ticks).await;
                            id
                        });
                    }
                    Some(Ok(id)) = exits.join_next() => {
                        if events.send(ProviderEvent::Gone { id }).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Some(receiver))
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        self.reap_exited();
        let records = self.load_records();
        let mut live: Vec<ObservedInstance> = procfs::pids()
            .into_iter()
            .filter_map(|pid| observe_pid(pid, &selector.project, &records))
            .collect();
        let mut dead: Vec<ObservedInstance> = records
            .into_iter()
            .filter(|r| r.tags.project == selector.project && !live.iter().any(|l| l.id == r.id))
            .map(|r| ObservedInstance {
                id: r.id,
                tags: r.tags,
                labels: BTreeMap::new(),
                address: r.address,
                state: InstanceState::Dead,
                started_at: r.started_at,
            })
            .collect();
        live.append(&mut dead);
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths() {
        assert_eq!(parse_id("123-456"), Some((123, 456)));
        assert_eq!(parse_id("sim-1"), None);
    }
}

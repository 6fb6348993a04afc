//! The `process` provider: each instance is a local process in its own session and, where
//! tend may make them, its own cgroups; the instance is every process in them.
//!
//! Tags travel in the process environment (`TEND_PROJECT`, `TEND_GROUP`, `TEND_SLOT`,
//! `TEND_HASH`, and `TEND_FORMAT` from format 2 on), set atomically by `exec`, so observed state is rebuilt from `/proc` alone:
//! deleting the state folder loses no instance. An instance id is `<pid>-<start ticks>`, so
//! a reused pid is never mistaken for an old instance. A small record file remembers
//! instances that died (so a plan can say "heal" rather than "create"), and their cgroups;
//! it is never the only copy of anything that runs. Membership never depends on the
//! environment: it is the cgroup, or without one the session.

mod cgroup;
mod clone3;
mod housekeeping;
mod launch;
pub(crate) mod members;
mod observe;
mod pidfd;
mod records;
mod spawn;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use engine::procfs;
use engine::provider::{
    require_tags, tags, ObservedInstance, Provider, ProviderError, ProviderEvent, ProvisionRequest,
    Selector,
};

use cgroup::{Cgroups, InstanceCgroup};
use members::Members;
use observe::parse_id;
use pidfd::wait_for_exit;
use records::{Record, Records};
use spawn::{spawn, unique_name, Start, ENV_STOP_TIMEOUT};

const NAME: &str = "process";

/// How long a stop may take when nothing says otherwise.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn backend(detail: String) -> ProviderError {
    ProviderError::Backend {
        provider: NAME.to_owned(),
        detail,
        source: None,
    }
}

/// A new instance announced to a running `watch`: its id, pid, start ticks and cgroups.
type Announced = (String, u32, u64, InstanceCgroup);

/// The machine a group's settings name, if any.
fn machine_of(props: &BTreeMap<String, serde_json::Value>) -> Option<&str> {
    props.get("machine").and_then(|v| v.as_str())
}

/// Refuses to act on, or to speak for, the processes of another machine: only a
/// controller on that machine sees and keeps them.
fn on_machine(machine: &str) -> Result<(), ProviderError> {
    let here = engine::store::etcd::host_name();
    if machine == here {
        Ok(())
    } else {
        Err(backend(format!(
            "process instances of machine {machine:?} are kept only by a tend on that machine; this is {here:?}"
        )))
    }
}

/// Local processes, with logs and records under `<state_dir>/process/`.
pub struct ProcessProvider {
    dir: PathBuf,
    /// Children this tend started, kept so their exits are reaped (no zombies).
    children: Mutex<HashSet<u32>>,
    records: Records,
    /// The cgroup hierarchies tend may use here, found on first use.
    cgroups: OnceLock<Cgroups>,
    /// Where new instances are announced to a running `watch`.
    watched: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Announced>>>,
    /// Machines the groups checked since the last `describe` name (`process(machine =
    /// ...)`): instances of another machine are kept only by a controller there.
    machines: Mutex<std::collections::BTreeSet<String>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a group's settings let tend make cgroups (`process(cgroups = False)` does not).
fn wants_cgroups(props: &BTreeMap<String, serde_json::Value>) -> bool {
    props.get("cgroups") != Some(&serde_json::Value::Bool(false))
}

impl ProcessProvider {
    /// A process provider keeping logs and records under `state_dir/process/`.
    pub fn new(state_dir: &Path) -> Self {
        let dir = state_dir.join("process");
        ProcessProvider {
            records: Records::new(dir.join("instances.jsonl")),
            dir,
            children: Mutex::new(HashSet::new()),
            cgroups: OnceLock::new(),
            watched: Mutex::new(None),
            machines: Mutex::new(Default::default()),
        }
    }

    /// The running instance of the request's project made under the request's idempotency
    /// key (`tend.key`), if there is one.
    fn made_under(&self, request: &ProvisionRequest) -> Result<Option<String>, ProviderError> {
        let Some(key) = request.labels.get(tags::KEY) else {
            return Ok(None);
        };
        let records = self.records.load()?;
        Ok(records
            .values()
            .filter(|r| {
                r.tags.project == request.tags.project && r.labels.get(tags::KEY) == Some(key)
            })
            .find(|r| {
                observe::parse_id(&r.id).is_some_and(|(pid, ticks)| {
                    procfs::stat(pid).is_some_and(|s| s.start_ticks == ticks)
                })
            })
            .map(|r| r.id.clone()))
    }

    fn cgroups(&self) -> &Cgroups {
        self.cgroups.get_or_init(Cgroups::detect)
    }

    /// Reaps children `ended` (seen as zombies) that this provider started, so they do not
    /// linger: each is waited for by its pid, which leaves every other child of tend alone.
    fn reap_ended(&self, ended: &[u32]) {
        for pid in ended {
            self.reap_one(*pid);
        }
    }

    /// Reaps child `pid` once it has exited.
    fn reap_one(&self, pid: u32) {
        if let Ok(mut children) = self.children.lock() {
            if children.contains(&pid) && launch::reap(pid) {
                children.remove(&pid);
            }
        }
    }

    /// The processes of instance `id`: by its cgroups (from its record, or from the
    /// leader itself while it runs, or from what it left), else by its session.
    fn members(&self, id: &str, record: Option<&Record>) -> Option<Members> {
        let (leader, ticks) = parse_id(id)?;
        let mut cgroup =
            InstanceCgroup::from_dirs(record.map(|r| r.cgroups.clone()).unwrap_or_default());
        if cgroup.is_empty() {
            let first = if procfs::is_alive(leader, ticks) {
                Some(leader)
            } else {
                members::session(leader, ticks).first().copied()
            };
            if let Some(pid) = first {
                cgroup = Cgroups::of_process(pid);
            }
        }
        Some(Members {
            leader,
            ticks,
            cgroup,
        })
    }

    /// How long instance `id` may take to stop: from its record, else from the environment
    /// of one of its processes.
    fn stop_timeout(record: Option<&Record>, running: &[u32]) -> Duration {
        record
            .and_then(|r| r.stop_timeout_ms)
            .or_else(|| {
                running.iter().find_map(|pid| {
                    procfs::environ(*pid)?
                        .into_iter()
                        .find(|(k, _)| k == ENV_STOP_TIMEOUT)?
                        .1
                        .parse()
                        .ok()
                })
            })
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_STOP_TIMEOUT)
    }
}

#[async_trait]
impl Provider for ProcessProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate(&self, props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        for (key, value) in props {
            let fits = match key.as_str() {
                "cgroups" => value.is_boolean(),
                "machine" => value.as_str().is_some_and(|m| !m.is_empty()),
                _ => false,
            };
            if !fits {
                return Err(ProviderError::InvalidProps {
                    provider: NAME.to_owned(),
                    detail: format!(
                        "process takes only `cgroups` (True or False) and `machine` (a name), got {key:?}"
                    ),
                });
            }
        }
        if let Some(machine) = machine_of(props) {
            if let Ok(mut machines) = self.machines.lock() {
                machines.insert(machine.to_owned());
            }
        }
        Ok(())
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(NAME, &request)?;
        if let Some(machine) = machine_of(&request.props) {
            on_machine(machine)?;
        }
        if let Some(made) = self.made_under(&request)? {
            return Ok(made);
        }
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| backend(format!("cannot create {}: {e}", logs.display())))?;
        let log = logs.join(format!("{}-{}.log", request.group, request.slot));
        if request.workdir.is_none() {
            let records = self.records.load()?;
            housekeeping::sweep_workdirs(
                &self.dir.join("run"),
                &request.group,
                &request.slot.to_string(),
                &request.tags.hash,
                &records,
            );
        }
        let name = unique_name(&request);
        let use_cgroups = wants_cgroups(&request.props) && !self.cgroups().is_empty();
        if request.resources.is_some() && !use_cgroups {
            return Err(backend(format!(
                "{}/{} asks for resources(), which need cgroups: {}",
                request.group,
                request.slot,
                if wants_cgroups(&request.props) {
                    "tend cannot make them on this machine (it needs root and a writable cgroup hierarchy)"
                } else {
                    "this group's provider is process(cgroups = False)"
                }
            )));
        }
        let cgroup = if use_cgroups {
            self.cgroups()
                .create(&name, request.resources.as_ref())
                .map_err(backend)?
        } else {
            InstanceCgroup::default()
        };
        let secrets = (!request.secret_files.is_empty()).then(|| name.clone());
        let (dir, log_path, req) = (self.dir.clone(), log.clone(), request.clone());
        let (secret_name, joins) = (secrets.clone(), cgroup.start_in());
        let spawned = tokio::task::spawn_blocking(move || {
            let start = Start {
                dir: &dir,
                log: &log_path,
                secrets: secret_name.as_deref(),
                cgroups: joins,
            };
            spawn(&req, start)
        })
        .await
        .map_err(|e| backend(format!("starting the process failed: {e}")))
        .and_then(|r| r);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(name) = &secrets {
                    crate::files::remove_secrets(name);
                }
                cgroup.remove();
                return Err(e);
            }
        };
        let pid = child.pid;
        let stat =
            procfs::stat(pid).ok_or_else(|| backend(format!("process {pid} vanished at start")))?;
        let id = format!("{pid}-{}", stat.start_ticks);
        if let Ok(mut children) = self.children.lock() {
            children.insert(pid);
        }
        if let Some(watch) = self.watched.lock().ok().and_then(|w| w.clone()) {
            let _ = watch.send((id.clone(), pid, stat.start_ticks, cgroup.clone()));
        }
        self.records.started(Record {
            id: id.clone(),
            tags: request.tags.clone(),
            address: request.address.clone(),
            started_at: now_ms(),
            log,
            secrets,
            cgroups: cgroup.dirs,
            stop_timeout_ms: Some(request.stop_timeout.as_millis()),
            labels: request.labels.clone(),
        })?;
        Ok(id)
    }

    /// Stops every process of the instance (SIGTERM, then SIGKILL after its stop timeout),
    /// whether its leader still runs or not, and forgets it.
    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        let record = self.records.find(id);
        let not_found = || ProviderError::NotFound {
            provider: NAME.to_owned(),
            id: id.to_owned(),
        };
        let members = self.members(id, record.as_ref()).ok_or_else(not_found)?;
        let running = members.running();
        if running.is_empty() && record.is_none() {
            return Err(not_found());
        }
        if running.is_empty() {
            members.cgroup.remove();
        } else {
            let timeout = Self::stop_timeout(record.as_ref(), &running);
            let left = members.stop(timeout).await;
            if !left.is_empty() {
                return Err(backend(format!(
                    "processes {left:?} of instance {id} survived SIGKILL"
                )));
            }
        }
        self.reap_one(members.leader);
        if let Some(name) = record.and_then(|r| r.secrets) {
            crate::files::remove_secrets(&name);
        }
        self.records.gone(id)
    }

    async fn alive(&self, id: &str, _selector: &Selector) -> Result<bool, ProviderError> {
        Ok(parse_id(id).is_some_and(|(pid, ticks)| procfs::is_alive(pid, ticks)))
    }

    /// A dead instance whose processes still run may hold its port: its heal stops them
    /// before it starts the replacement.
    async fn has_remains(&self, id: &str) -> Result<bool, ProviderError> {
        let record = self.records.find(id);
        Ok(self
            .members(id, record.as_ref())
            .is_some_and(|m| !m.running().is_empty()))
    }

    /// Exits are noticed at once: one pidfd per instance, readable when the process ends.
    async fn watch(
        &self,
        selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        let (events, receiver) = tokio::sync::mpsc::channel(1024);
        let (announce, mut announced) = tokio::sync::mpsc::unbounded_channel::<Announced>();
        if let Ok(mut watched) = self.watched.lock() {
            *watched = Some(announce.clone());
        }
        if self.cgroups().is_empty() {
            let note = "process: tend cannot make cgroups on this machine; an instance is the \
                        processes of its session, and resources() cannot be enforced";
            let _ = events.try_send(ProviderEvent::Note {
                message: note.to_owned(),
            });
        }
        let records = self.records.load()?;
        for instance in self.describe(selector).await? {
            if let (true, Some((pid, ticks))) = (instance.state.is_live(), parse_id(&instance.id)) {
                let cgroup = records
                    .get(&instance.id)
                    .map(|r| InstanceCgroup::from_dirs(r.cgroups.clone()))
                    .unwrap_or_else(|| Cgroups::of_process(pid));
                let _ = announce.send((instance.id.clone(), pid, ticks, cgroup));
            }
        }
        tokio::spawn(async move {
            let mut exits = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    next = announced.recv() => {
                        let Some((id, pid, ticks, cgroup)) = next else { break };
                        exits.spawn(async move {
                            wait_for_exit(pid, ticks).await;
                            let why = cgroup.oom_killed().then(|| "oom".to_owned());
                            (id, why)
                        });
                    }
                    Some(Ok((id, why))) = exits.join_next() => {
                        if events.send(ProviderEvent::Gone { id, why }).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Some(receiver))
    }

    /// One pass over `/proc`, on the blocking pool: with many processes it takes a while,
    /// and what else tend does (a heal, say) goes on meanwhile.
    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let named = self
            .machines
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default();
        for machine in &named {
            on_machine(machine)?;
        }
        let records = self.records.load()?;
        let project = selector.project.clone();
        let (found, ended) = tokio::task::spawn_blocking(move || {
            housekeeping::rotate_logs(&records);
            observe::instances(&project, &records, std::process::id())
        })
        .await
        .map_err(|e| backend(format!("reading /proc failed: {e}")))?;
        self.reap_ended(&ended);
        Ok(found)
    }
}

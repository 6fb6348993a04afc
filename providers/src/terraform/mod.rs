//! The `terraform` provider: a group's instances are the keys of one `for_each`
//! `terraform_data` resource in `.tend/terraform/<group>/main.tf.json`, made and removed by
//! a real `terraform apply`, and observed through `terraform show -json`.
//!
//! A flavor's command runs through `local-exec` provisioners: the create one starts it as
//! a session of its own and records its pid, the destroy one stops what was recorded. An
//! instance is running while that session's leader runs. A provisioner that fails taints
//! its resource: it shows as dead, and the next plan heals it. tend runs the `terraform`
//! on `PATH` and never downloads one.

mod config;
mod scripts;
mod state;
pub mod tool;
mod workspace;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::provider::{
    require_tags, tags, InstanceState, InstanceTags, ObservedInstance, Provider, ProviderError,
    ProvisionRequest, Selector,
};
use serde_json::{json, Value};

use state::Resource;
use tool::Tool;
pub use workspace::Progress;
use workspace::{Change, Workspace};

/// How the provider reads what Terraform writes, for the fuzzer (`benches/fuzz.rs`): the
/// output of `terraform show -json`, a group's `main.tf.json`, and the lines of
/// `terraform apply -json`. Not an interface of its own.
#[doc(hidden)]
pub mod reading {
    pub use super::config::{instances as config_instances, render as config_render};
    pub use super::state::{parse as show, Resource};
    pub use super::workspace::{folders_of, read_event, ApplyEvent};
}

const NAME: &str = "terraform";
const SETTINGS: [&str; 1] = ["resource"];

fn backend(detail: String) -> ProviderError {
    ProviderError::backend(NAME, detail)
}

fn invalid(detail: String) -> ProviderError {
    ProviderError::invalid(NAME, detail)
}

/// Checks a `terraform(...)` provider's settings.
fn check_settings(props: &BTreeMap<String, Value>) -> Result<(), ProviderError> {
    if let Some(other) = props.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown setting {other:?}; terraform takes {}",
            SETTINGS.join(", ")
        )));
    }
    match props.get("resource") {
        None => Ok(()),
        Some(Value::String(r)) if r == config::RESOURCE_TYPE => Ok(()),
        Some(other) => Err(invalid(format!(
            "resource {other} cannot be used: tend runs Terraform offline, where only its builtin {} resource works",
            config::RESOURCE_TYPE
        ))),
    }
}

/// The key of a new instance in `slot`: the slot, and a word from its idempotency key
/// (so a provision made again finds the same key) or a random one.
fn instance_key(slot: &str, idempotency: Option<&str>) -> String {
    format!("{slot}-{}", crate::word_for(idempotency))
}

/// A state file's size and time: while they stay, so does what `show` says of it.
type Stamp = (u64, std::time::SystemTime);
/// A group's last `show`, and the state file it read.
type Shown = (Stamp, Arc<Vec<Resource>>);

/// Where an instance was last seen: its group and key.
#[derive(Clone)]
struct Place {
    group: String,
    key: String,
    run: PathBuf,
    memory: Option<PathBuf>,
}

/// Instances as keys of Terraform resources, one working folder per group.
pub struct TerraformProvider {
    dir: PathBuf,
    progress: Progress,
    /// The Terraform found; a failed lookup is not kept, so one installed later is found.
    tool: tokio::sync::OnceCell<Tool>,
    workspaces: Mutex<BTreeMap<String, Arc<Workspace>>>,
    /// Each group's last `show`, by the size and time of its state file: not run again
    /// while the state is unchanged.
    shows: Mutex<HashMap<PathBuf, Shown>>,
    /// Held while a group's state is read.
    reading: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Where each instance id was last seen.
    places: Mutex<HashMap<String, Place>>,
}

/// The default progress: tend's log (target `tend::terraform`, fields `tool` and `group`).
pub fn progress_to_log() -> Progress {
    Arc::new(|group: &str, line: &str| {
        tracing::info!(target: "tend::terraform", tool = "terraform", group, "{line}");
    })
}

impl TerraformProvider {
    /// A terraform provider with its groups' folders under `state_dir/terraform/`.
    pub fn new(state_dir: &Path, progress: Progress) -> Self {
        TerraformProvider {
            dir: state_dir.join("terraform"),
            progress,
            tool: tokio::sync::OnceCell::new(),
            workspaces: Mutex::new(BTreeMap::new()),
            shows: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
            places: Mutex::new(HashMap::new()),
        }
    }

    /// The Terraform this provider runs, found on first use.
    pub async fn tool(&self) -> Result<Tool, ProviderError> {
        self.tool
            .get_or_try_init(|| tool::find(&self.dir))
            .await
            .cloned()
            .map_err(backend)
    }

    fn rc(&self) -> PathBuf {
        self.dir.join("terraformrc")
    }

    async fn workspace(&self, group: &str) -> Result<Arc<Workspace>, ProviderError> {
        let tool = self.tool().await?;
        let mut all = self
            .workspaces
            .lock()
            .map_err(|_| backend("the workspaces are poisoned".into()))?;
        Ok(all
            .entry(group.to_owned())
            .or_insert_with(|| {
                Arc::new(Workspace::new(
                    group,
                    self.dir.join(group),
                    tool,
                    self.rc(),
                    self.progress.clone(),
                ))
            })
            .clone())
    }

    /// The groups with a folder here.
    fn groups(&self) -> Result<Vec<String>, ProviderError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(backend(format!("cannot read {}: {e}", self.dir.display()))),
        };
        let mut groups: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(config::FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        groups.sort();
        Ok(groups)
    }

    /// A group's instances in Terraform's state, from the last `show` while its state file
    /// is unchanged.
    async fn resources(&self, group: &str) -> Result<Arc<Vec<Resource>>, ProviderError> {
        let dir = self.dir.join(group);
        // One `show` at a time per group: callers that come meanwhile take its answer.
        let reading = self
            .reading
            .lock()
            .map(|mut r| r.entry(dir.clone()).or_default().clone())
            .unwrap_or_default();
        let _reading = reading.lock().await;
        let stamp = std::fs::metadata(dir.join("terraform.tfstate"))
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)));
        let Some(stamp) = stamp else {
            return Ok(Arc::new(Vec::new()));
        };
        if let Some((seen, found)) = self.shows.lock().ok().and_then(|s| s.get(&dir).cloned()) {
            if seen == stamp {
                return Ok(found);
            }
        }
        let tool = self.tool().await?;
        let found = Arc::new(
            workspace::show(&tool, &dir, &self.rc(), group)
                .await
                .map_err(backend)?,
        );
        if let Ok(mut shows) = self.shows.lock() {
            shows.insert(dir, (stamp, found.clone()));
        }
        Ok(found)
    }

    fn remember(&self, id: &str, group: &str, resource: &Resource) {
        let Some(place) = place_of(group, resource) else {
            return;
        };
        if let Ok(mut places) = self.places.lock() {
            places.insert(id.to_owned(), place);
        }
    }

    /// Where instance `id` is: from the last look, else from a new one.
    async fn place(&self, id: &str) -> Result<Option<Place>, ProviderError> {
        if let Some(place) = self.places.lock().ok().and_then(|p| p.get(id).cloned()) {
            return Ok(Some(place));
        }
        for group in self.groups()? {
            for resource in self.resources(&group).await?.iter() {
                self.remember(&resource.id, &group, resource);
            }
        }
        Ok(self.places.lock().ok().and_then(|p| p.get(id).cloned()))
    }

    /// Writes what instance `key` needs before its create provisioner runs: its working
    /// folder and files, its environment and secret files (in memory), and its scripts.
    /// Returns its value for `main.tf.json`.
    fn prepare(&self, request: &ProvisionRequest, key: &str) -> Result<Value, ProviderError> {
        // Folders of this attempt's own: a key reused for a tainted resource never shares
        // them with the instance it replaces, whose clean-up may come after.
        let attempt = format!("{key}.{}", crate::random_word());
        let made = self.prepare_attempt(request, &attempt);
        if made.is_err() {
            let t = &request.tags;
            let _ =
                std::fs::remove_dir_all(self.dir.join(&request.group).join("run").join(&attempt));
            crate::files::remove_secrets(&format!("terraform-{}-{}-{attempt}", t.project, t.group));
        }
        made
    }

    fn prepare_attempt(
        &self,
        request: &ProvisionRequest,
        attempt: &str,
    ) -> Result<Value, ProviderError> {
        let t = &request.tags;
        let run = self.dir.join(&request.group).join("run").join(attempt);
        let run = std::path::absolute(&run).unwrap_or(run);
        std::fs::create_dir_all(&run)
            .map_err(|e| backend(format!("cannot create {}: {e}", run.display())))?;
        let workdir = request
            .workdir
            .as_ref()
            .map_or_else(|| run.clone(), PathBuf::from);
        std::fs::create_dir_all(&workdir)
            .map_err(|e| backend(format!("cannot create {}: {e}", workdir.display())))?;
        crate::files::write_into(NAME, &workdir, &request.files)?;
        // The environment and the secret files go to memory only.
        // Not the tag variables (`TEND_PROJECT`, ...): the process provider takes a session
        // leader that carries them for one of its own instances.
        let mut env = request.env.clone();
        for (k, v) in [
            ("TEND_PORTS", t.ports_text()),
            ("TEND_ADDRESS", request.address.clone().unwrap_or_default()),
            (
                "TEND_STOP_TIMEOUT_MS",
                request.stop_timeout.to_std().as_millis().to_string(),
            ),
        ] {
            env.insert(k.to_owned(), v);
        }
        let mut memory_files: BTreeMap<String, String> =
            [("environment".to_owned(), scripts::environment(&env))].into();
        for (path, content) in &request.secret_files {
            memory_files.insert(format!("files/{path}"), content.clone());
        }
        let name = format!("terraform-{}-{}-{attempt}", t.project, t.group);
        let memory = crate::files::write_secrets(NAME, &name, &memory_files)?;
        crate::files::link_secrets(
            NAME,
            &workdir,
            &memory.join("files"),
            request.secret_files.keys(),
        )?;
        let environment = memory.join("environment");
        let start = scripts::start(&scripts::Start {
            run: &run,
            workdir: &workdir,
            command: &request.command,
            environment: &environment,
        });
        let tenths = request.stop_timeout.to_std().as_millis() as u64 / 100;
        let stop = scripts::stop(&run, tenths.max(1), &[&memory]);
        for (file, text) in [("start.sh", start), ("stop.sh", stop)] {
            std::fs::write(run.join(file), text)
                .map_err(|e| backend(format!("cannot write {}: {e}", run.join(file).display())))?;
        }
        let mut all_tags = request.labels.clone();
        all_tags.extend(t.to_map());
        Ok(json!({
            "tags": all_tags,
            "run": run.to_string_lossy(),
            "memory": memory.to_string_lossy(),
            "command": request.command,
            "workdir": workdir.to_string_lossy(),
            "address": request.address.clone().unwrap_or_default(),
        }))
    }
}

/// Where `resource` of `group` keeps its run folder and its environment in memory.
fn place_of(group: &str, resource: &Resource) -> Option<Place> {
    placed(group, &resource.key, &resource.input)
}

/// Where instance `key` of `group`, whose value is `value`, keeps its folders.
fn placed(group: &str, key: &str, value: &Value) -> Option<Place> {
    let (run, memory) = workspace::folders_of(value)?;
    Some(Place {
        group: group.to_owned(),
        key: key.to_owned(),
        run: run.to_path_buf(),
        memory: memory.map(Path::to_path_buf),
    })
}

/// How an instance made by start.sh in `run` is doing: running while its session leader
/// runs; with the number of its other processes left when it is gone.
fn liveness(run: &Path) -> (InstanceState, u64, u32) {
    match scripts::recorded(run) {
        Some((pid, ticks)) if engine::procfs::is_alive(pid, ticks) => (
            InstanceState::Running,
            engine::procfs::start_time_ms(ticks),
            0,
        ),
        Some((pid, ticks)) => {
            let left = crate::process::members::session(pid, ticks).len();
            (
                InstanceState::Dead,
                engine::procfs::start_time_ms(ticks),
                u32::try_from(left).unwrap_or(u32::MAX),
            )
        }
        None => (InstanceState::Dead, 0, 0),
    }
}

fn observed(resource: &Resource) -> Option<ObservedInstance> {
    let all: BTreeMap<String, String> = resource
        .input
        .get("tags")?
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let tags = InstanceTags::from_map(&all);
    let own = tags.to_map();
    let labels = all
        .into_iter()
        .filter(|(k, _)| !own.contains_key(k))
        .collect();
    let (state, started_at, remains) = match resource.field("run") {
        // Dead whatever runs: a provisioner failed. What it started is left running.
        Some(run) if resource.tainted => {
            let (_, started, _) = liveness(Path::new(run));
            let left = scripts::recorded(Path::new(run)).map_or(0, |(pid, ticks)| {
                crate::process::members::session(pid, ticks).len()
            });
            (
                InstanceState::Dead,
                started,
                u32::try_from(left).unwrap_or(u32::MAX),
            )
        }
        Some(run) => liveness(Path::new(run)),
        None => (InstanceState::Dead, 0, 0),
    };
    Some(ObservedInstance {
        id: resource.id.clone(),
        ports: tags.port_map(),
        tags,
        labels,
        address: resource
            .field("address")
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        state,
        started_at,
        ended: resource.tainted.then(|| "tainted".to_owned()),
        remains,
    })
}

#[async_trait]
impl Provider for TerraformProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate(&self, props: &BTreeMap<String, Value>) -> Result<(), ProviderError> {
        check_settings(props)
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(NAME, &request)?;
        check_settings(&request.props)?;
        if request.command.is_empty() {
            return Err(invalid(format!(
                "group {:?} has no command for its instances to run",
                request.group
            )));
        }
        let t = &request.tags;
        let workspace = self.workspace(&request.group).await?;
        let held = self.resources(&request.group).await?;
        let key = match request.labels.get(tags::KEY) {
            Some(idempotency) => instance_key(&t.slot, Some(idempotency)),
            // A tainted resource of the slot (a create whose provisioner failed) is
            // replaced in place: failed attempts never pile up.
            None => held
                .iter()
                .find(|r| {
                    r.tainted
                        && observed(r)
                            .is_some_and(|o| o.tags.project == t.project && o.tags.slot == t.slot)
                })
                .map_or_else(|| instance_key(&t.slot, None), |r| r.key.clone()),
        };
        // Made before under this key (a provision cut short): that one, when it runs.
        let before = held.iter().find(|r| r.key == key).cloned();
        if let Some(made) = &before {
            if observed(made).is_some_and(|o| o.state.is_live()) {
                self.remember(&made.id, &request.group, made);
                return Ok(made.id.clone());
            }
        }
        // What a dead attempt under this key left (a tainted one's destroy provisioner
        // never runs): its folders, its environment in memory, any process it started.
        if let Some(stale) = before.as_ref().and_then(|r| place_of(&request.group, r)) {
            scripts::clean_up(
                &stale.run,
                stale.memory.as_deref(),
                scripts::recorded(&stale.run),
            );
        }
        let value = self.prepare(&request, &key)?;
        let place = placed(&request.group, &key, &value);
        let answer = workspace
            .submit(Change::Add {
                key: key.clone(),
                value,
                replace: before.is_some(),
            })
            .await;
        match answer {
            Ok(Some(id)) => {
                if let (Some(place), Ok(mut places)) = (place, self.places.lock()) {
                    places.insert(id.clone(), place);
                }
                Ok(id)
            }
            Ok(None) => Err(backend(format!(
                "{}: apply gave no id",
                config::address(&request.group, &key)
            ))),
            // What was never made is taken back and cleaned up by the apply itself, under
            // its lock.
            Err(why) => Err(backend(format!("group {}: {why}", request.group))),
        }
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        let Some(place) = self.place(id).await? else {
            return Err(ProviderError::NotFound {
                provider: NAME.to_owned(),
                id: id.to_owned(),
            });
        };
        let workspace = self.workspace(&place.group).await?;
        let session = scripts::recorded(&place.run);
        let removed = workspace
            .submit(Change::Remove {
                key: place.key.clone(),
                id: id.to_owned(),
            })
            .await
            .map_err(|why| backend(format!("group {}: {why}", place.group)))?;
        // Only when it was this instance that went: a key that holds a newer one keeps
        // its folders and its program.
        if removed.is_some() {
            scripts::clean_up(&place.run, place.memory.as_deref(), session);
        }
        if let Ok(mut places) = self.places.lock() {
            places.remove(id);
        }
        Ok(())
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let mut found = Vec::new();
        for group in self.groups()? {
            for resource in self.resources(&group).await?.iter() {
                let Some(instance) = observed(resource) else {
                    continue;
                };
                if instance.tags.project != selector.project {
                    continue;
                }
                self.remember(&resource.id, &group, resource);
                found.push(instance);
            }
        }
        Ok(found)
    }

    async fn has_remains(&self, id: &str) -> Result<bool, ProviderError> {
        Ok(self
            .place(id)
            .await?
            .is_some_and(|p| liveness(&p.run).2 > 0))
    }

    async fn about(&self) -> Option<String> {
        Some(match self.tool().await {
            Ok(tool) => tool.to_string(),
            Err(e) => e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_slot_and_follow_the_idempotency_key() {
        let a = instance_key("0", Some("k-1"));
        assert_eq!(a, instance_key("0", Some("k-1")));
        assert_ne!(a, instance_key("0", Some("k-2")));
        assert!(a.starts_with("0-") && a.len() == 8, "{a}");
        assert!(instance_key("db-a", None).starts_with("db-a-"));
    }

    #[test]
    fn only_terraform_data_is_a_resource_it_takes() {
        let props =
            |v: Value| -> BTreeMap<String, Value> { serde_json::from_value(v).unwrap_or_default() };
        assert!(check_settings(&props(json!({}))).is_ok());
        assert!(check_settings(&props(json!({"resource": "terraform_data"}))).is_ok());
        let e = check_settings(&props(json!({"resource": "aws_instance"})))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("only its builtin terraform_data resource works"),
            "{e}"
        );
        assert!(check_settings(&props(json!({"image": "x"}))).is_err());
    }
}

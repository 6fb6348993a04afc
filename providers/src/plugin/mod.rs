//! Providers from anywhere: a plugin is any program speaking tend's protocol (JSON-RPC 2.0,
//! one message per line, on its stdin and stdout). `docs/plugins.md` is the contract.
//!
//! The host side: a [`PluginProvider`] starts its plugin on first use ([`supervise`]),
//! speaks to it ([`conn`]), forwards its stderr ([`logs`]), reads its answers without
//! trusting them ([`answers`]), and makes it look like any provider. A provision whose
//! outcome is unknown (no answer in time, or the plugin died during it) is looked up by its
//! idempotency key before anything is made again.

#[doc(hidden)]
pub mod answers;
pub mod conformance;
pub mod conn;
pub mod logs;
pub mod supervise;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use engine::provider::fenced::EPOCH_LABEL;
use engine::provider::{
    require_tags, tags, ObservedInstance, Provider, ProviderError, ProviderEvent, ProvisionRequest,
    Selector,
};
use serde_json::{json, Value};
use tend_plugin::methods::{
    self, InitializeResult, InstanceSpec, ProvisionParams, ProvisionResult,
};
use tend_plugin::ErrorCode;

use conn::{CallError, Connection, Launch};

use supervise::{Down, Supervisor};
/// The protocol crate the host side speaks, for what reads plugin replies outside this
/// crate (the fuzzer, `benches/fuzz.rs`).
#[doc(hidden)]
pub use tend_plugin as protocol;

/// A provision's deadline unless the plugin asks for another.
const PROVISION_DEADLINE: Duration = Duration::from_secs(120);
/// A destroy's.
const DESTROY_DEADLINE: Duration = Duration::from_secs(60);
/// A describe's.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(30);
/// Time for an answer to travel back, on top of the deadline the plugin is given.
const TRANSIT: Duration = Duration::from_secs(1);

/// A `plugin(...)` provider of a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginSpec {
    /// The name groups use it by.
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// What its `initialize` gets.
    pub config: Value,
}

impl PluginSpec {
    /// The plugin a group's provider settings describe, when it is one
    /// (`{"plugin": {"command": [...], "config": {...}}}`).
    pub fn from_props(name: &str, props: &BTreeMap<String, Value>) -> Option<PluginSpec> {
        let plugin = props.get("plugin")?;
        let command = plugin
            .get("command")?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(PluginSpec {
            name: name.to_owned(),
            command,
            config: plugin.get("config").cloned().unwrap_or(json!({})),
        })
    }
}

/// Makes a [`PluginProvider`] for each `plugin(...)` provider a spec names.
pub struct Plugins {
    /// The folder plugins start in (the spec's).
    pub dir: PathBuf,
    /// Where their stderr goes.
    pub logs: logs::LogSink,
}

impl engine::provider::ProviderFactory for Plugins {
    fn make(&self, kind: &str, props: &BTreeMap<String, Value>) -> Option<Arc<dyn Provider>> {
        let spec = PluginSpec::from_props(kind, props)?;
        Some(Arc::new(PluginProvider::new(
            &spec,
            &self.dir,
            self.logs.clone(),
        )))
    }
}

/// One command and config of a plugin, and the process that serves it. A spec that changes
/// a plugin's config (a folder, a region) adds one: the instances made under the old config
/// are still seen, and removed, through the old one.
struct World {
    spec: PluginSpec,
    supervisor: Supervisor,
}

/// Instances made by an external plugin.
pub struct PluginProvider {
    name: String,
    dir: PathBuf,
    logs: logs::LogSink,
    /// Every command and config the specs seen so far gave the plugin, first seen first.
    worlds: RwLock<Vec<Arc<World>>>,
    /// Which world each instance was seen in, by id.
    owners: Mutex<HashMap<String, usize>>,
    /// Provisions whose outcome is unknown, by (project, group, slot, hash): their key.
    unresolved: Mutex<HashMap<[String; 4], String>>,
    keys: AtomicU64,
    /// The highest fencing token this tend acted under.
    epoch: AtomicI64,
    /// Where `instance.changed` goes once tend watches: every world's, those added later
    /// too.
    changes: Mutex<Option<tokio::sync::mpsc::Sender<ProviderEvent>>>,
}

impl PluginProvider {
    /// The provider of `spec`, started in `dir` (the spec's folder) when first used, its
    /// stderr going to `logs`.
    pub fn new(spec: &PluginSpec, dir: &Path, logs: logs::LogSink) -> PluginProvider {
        let provider = PluginProvider {
            name: spec.name.clone(),
            dir: dir.to_path_buf(),
            logs,
            worlds: RwLock::default(),
            owners: Mutex::default(),
            unresolved: Mutex::default(),
            keys: AtomicU64::new(0),
            epoch: AtomicI64::new(0),
            changes: Mutex::new(None),
        };
        provider.world_of(spec);
        provider
    }

    fn backend(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Backend {
            provider: self.name.clone(),
            detail: format!("plugin {}", detail.into()),
            source: None,
        }
    }

    /// The world of `spec`, added when new; its index.
    fn world_of(&self, spec: &PluginSpec) -> (usize, Arc<World>) {
        if let Ok(worlds) = self.worlds.read() {
            if let Some(found) = worlds.iter().position(|w| w.spec == *spec) {
                return (found, worlds[found].clone());
            }
        }
        let Ok(mut worlds) = self.worlds.write() else {
            // A poisoned list: a world of its own, not remembered.
            return (usize::MAX, Arc::new(self.new_world(spec)));
        };
        if let Some(found) = worlds.iter().position(|w| w.spec == *spec) {
            return (found, worlds[found].clone());
        }
        let world = Arc::new(self.new_world(spec));
        worlds.push(world.clone());
        if let Some(tx) = self.changes.lock().ok().and_then(|c| c.clone()) {
            forward_changes(&world, tx);
        }
        (worlds.len() - 1, world)
    }

    fn new_world(&self, spec: &PluginSpec) -> World {
        let launch = Launch::new(&spec.name, spec.command.clone(), self.dir.clone());
        World {
            spec: spec.clone(),
            supervisor: Supervisor::new(launch, spec.config.clone(), self.logs.clone()),
        }
    }

    fn worlds(&self) -> Vec<Arc<World>> {
        self.worlds.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// The world a group's settings name.
    fn world_for(
        &self,
        props: &BTreeMap<String, Value>,
    ) -> Result<(usize, Arc<World>), ProviderError> {
        let spec = PluginSpec::from_props(&self.name, props).ok_or_else(|| {
            ProviderError::InvalidProps {
                provider: self.name.clone(),
                detail: "a plugin needs command = [program, args...]".to_owned(),
            }
        })?;
        Ok(self.world_of(&spec))
    }

    async fn connection(&self, world: &World) -> Result<Arc<Connection>, ProviderError> {
        world
            .supervisor
            .connection()
            .await
            .map_err(|down| match down {
                Down::Settings(why) => ProviderError::InvalidProps {
                    provider: self.name.clone(),
                    detail: format!("plugin {} refused its config: {why}", self.name),
                },
                Down::Unavailable(why) => self.backend(why),
            })
    }

    /// The world's plugin, for a create or destroy: refused while its breaker is open.
    async fn acting(&self, world: &World) -> Result<Arc<Connection>, ProviderError> {
        world
            .supervisor
            .may_act()
            .await
            .map_err(|why| self.backend(why))?;
        self.connection(world).await
    }

    fn timeouts(info: Option<InitializeResult>) -> (Duration, Duration) {
        let timeouts = info.map(|i| i.timeouts).unwrap_or_default();
        (
            timeouts
                .provision_ms
                .map_or(PROVISION_DEADLINE, Duration::from_millis),
            timeouts
                .destroy_ms
                .map_or(DESTROY_DEADLINE, Duration::from_millis),
        )
    }

    fn new_key(&self, request: &ProvisionRequest) -> String {
        let n = self.keys.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let t = &request.tags;
        let seed = format!(
            "{}/{}/{}/{}/{now}/{n}/{}",
            t.project,
            t.group,
            t.slot,
            t.hash,
            std::process::id()
        );
        engine::spec::sha256_hex(seed.as_bytes())[..24].to_owned()
    }

    /// Every instance of one world carrying `filter`.
    async fn describe_where(
        &self,
        connection: &Connection,
        filter: BTreeMap<String, String>,
    ) -> Result<Vec<ObservedInstance>, ProviderError> {
        let answer = connection
            .call(
                methods::DESCRIBE,
                json!({ "tags": filter }),
                DESCRIBE_DEADLINE,
            )
            .await
            .map_err(|e| self.backend(format!("instance.describe: {e}")))?;
        answers::instances(answer, &filter).map_err(|e| self.backend(e))
    }

    /// The instance made under `key`, if the plugin shows one.
    async fn made_under(
        &self,
        connection: &Connection,
        project: &str,
        key: &str,
    ) -> Result<Option<ObservedInstance>, ProviderError> {
        let filter = [
            (tags::PROJECT.to_owned(), project.to_owned()),
            (tags::KEY.to_owned(), key.to_owned()),
        ]
        .into_iter()
        .collect();
        Ok(self
            .describe_where(connection, filter)
            .await?
            .into_iter()
            .next())
    }

    fn rpc_error(&self, method: &str, error: tend_plugin::RpcError) -> ProviderError {
        let made = error
            .data
            .as_ref()
            .and_then(|d| d.instance_id.clone())
            .map(|id| format!(" (instance {id} was made, tagged: tend finds it by its tags)"))
            .unwrap_or_default();
        match error.code {
            ErrorCode::InvalidSpec => ProviderError::InvalidProps {
                provider: self.name.clone(),
                detail: format!("plugin {}: {method}: {}", self.name, error.message),
            },
            _ => self.backend(format!("{method}: {error}{made}")),
        }
    }

    fn set_unresolved(&self, slot: &[String; 4], key: Option<&str>) {
        if let Ok(mut unresolved) = self.unresolved.lock() {
            match key {
                Some(key) => unresolved.insert(slot.clone(), key.to_owned()),
                None => unresolved.remove(slot),
            };
        }
    }

    fn own(&self, id: &str, world: usize) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.insert(id.to_owned(), world);
        }
    }

    /// Checks what a provision answered against what the plugin shows under the call's
    /// key: the instance tend keeps, or why none.
    async fn confirm(
        &self,
        connection: &Connection,
        request: &ProvisionRequest,
        key: &str,
        answered: String,
    ) -> Result<String, ProviderError> {
        let t = &request.tags;
        let shown = self.made_under(connection, &t.project, key).await?;
        match shown {
            Some(shown)
                if shown.tags.project == t.project
                    && shown.tags.group == t.group
                    && shown.tags.slot == t.slot
                    && shown.tags.hash == t.hash =>
            {
                if shown.id != answered {
                    (self.logs)(
                        &self.name,
                        &format!(
                            "instance.provision answered id {answered:?}, but the instance made under key {key} is {:?}: tend keeps that one",
                            shown.id
                        ),
                    );
                }
                Ok(shown.id)
            }
            // Made by this call (its key says so), but tagged for another slot.
            Some(shown) => {
                let removed = self.remove_made(connection, &shown.id).await;
                Err(self.backend(format!(
                    "instance.provision made instance {} tagged {}/{} at {}, not {}/{} at {}; {removed}",
                    shown.id, shown.tags.group, shown.tags.slot, shown.tags.hash, t.group, t.slot, t.hash
                )))
            }
            None => {
                // Not under its key: made without its tags, or the answer names another
                // instance (of this project or any other), which tend must not touch.
                match self.tags_anywhere(connection, &answered).await? {
                    Some(found) if found.contains_key(tags::PROJECT) => {
                        let typed = engine::provider::InstanceTags::from_map(&found);
                        let ours = typed.project == t.project
                            && typed.group == t.group
                            && typed.slot == t.slot
                            && typed.hash == t.hash;
                        if ours && !found.contains_key(tags::KEY) {
                            // Tagged for this slot and version, without the key label:
                            // made by this call, which is all the key is for.
                            (self.logs)(
                                &self.name,
                                &format!("instance {answered} does not carry {}: tend finds it by its other tags", tags::KEY),
                            );
                            return Ok(answered);
                        }
                        Err(self.backend(format!(
                            "instance.provision answered {answered:?}, an instance of project {:?} ({}/{}) made by another call: nothing is shown under this call's key {key}, and tend touches nothing",
                            typed.project, typed.group, typed.slot
                        )))
                    }
                    _ => {
                        let removed = self.remove_made(connection, &answered).await;
                        Err(self.backend(format!(
                            "instance.provision made instance {answered} but instance.describe does not show it with its tags; {removed}"
                        )))
                    }
                }
            }
        }
    }

    /// The tags instance `id` carries, from a describe of everything the plugin holds;
    /// `None` when it holds no such instance. Nothing else of the answer is trusted.
    async fn tags_anywhere(
        &self,
        connection: &Connection,
        id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ProviderError> {
        let answer = connection
            .call(methods::DESCRIBE, json!({ "tags": {} }), DESCRIBE_DEADLINE)
            .await
            .map_err(|e| self.backend(format!("instance.describe: {e}")))?;
        Ok(answer["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["id"].as_str() == Some(id))
            .map(|i| serde_json::from_value(i["tags"].clone()).unwrap_or_default()))
    }

    /// Destroys an instance this call made wrongly; says how that went.
    async fn remove_made(&self, connection: &Connection, id: &str) -> String {
        match self.destroy_in(connection, id).await {
            Ok(()) => "tend removed it".to_owned(),
            Err(e) => format!("tend could not remove it ({e}): remove it yourself"),
        }
    }

    async fn destroy_in(&self, connection: &Connection, id: &str) -> Result<(), ProviderError> {
        let (_, deadline) = Self::timeouts(connection.info());
        let params = json!({
            "id": id,
            "reason": "tend",
            "epoch": self.epoch.load(Ordering::Relaxed),
            "deadlineMs": u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        });
        match connection
            .call(methods::DESTROY, params, deadline + TRANSIT)
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Rpc(e)) if e.code == ErrorCode::NotFound => Ok(()),
            Err(CallError::Rpc(e)) => Err(self.rpc_error(methods::DESTROY, e)),
            Err(unknown) => Err(self.backend(format!("instance.destroy of {id}: {unknown}"))),
        }
    }
}

/// Forwards `world`'s `instance.changed` notices to `tx` as `Changed` events, from now on.
fn forward_changes(world: &World, tx: tokio::sync::mpsc::Sender<ProviderEvent>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut changes = world.supervisor.subscribe();
    runtime.spawn(async move {
        while changes.recv().await.is_some() {
            if tx.send(ProviderEvent::Changed).await.is_err() {
                break;
            }
        }
    });
}

/// What a plugin gets to make an instance: the rendered flavor. Secrets are in `env` and
/// `secretFiles`: the plugin needs them, and tend never logs what it sends.
fn properties(request: &ProvisionRequest) -> Value {
    json!({
        "command": request.command,
        "env": request.env,
        "files": request.files,
        "secretFiles": request.secret_files,
        "workdir": request.workdir,
        "address": request.address,
        "ports": request.tags.port_map(),
        "stopTimeoutMs": request.stop_timeout.as_millis(),
    })
}

#[async_trait]
impl Provider for PluginProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// Checks the settings, and learns the world they name: a group whose plugin config
    /// changed is still seen in the old one.
    fn validate(&self, props: &BTreeMap<String, Value>) -> Result<(), ProviderError> {
        match PluginSpec::from_props(&self.name, props) {
            Some(spec) if !spec.command.is_empty() => {
                self.world_of(&spec);
                Ok(())
            }
            _ => Err(ProviderError::InvalidProps {
                provider: self.name.clone(),
                detail: "a plugin needs command = [program, args...]".to_owned(),
            }),
        }
    }

    fn fenced_by(&self, epoch: i64) {
        self.epoch.fetch_max(epoch, Ordering::Relaxed);
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(&self.name, &request)?;
        let (index, world) = self.world_for(&request.props)?;
        let connection = self.acting(&world).await?;
        let t = &request.tags;
        let slot = [
            t.project.clone(),
            t.group.clone(),
            t.slot.clone(),
            t.hash.clone(),
        ];
        let earlier = self
            .unresolved
            .lock()
            .ok()
            .and_then(|u| u.get(&slot).cloned());
        // An earlier provision of this slot ended with its outcome unknown: look for what it
        // made before making anything, and make it again only under the same key. One
        // found dead is a provision cut short (its program never started): the same key
        // lets the plugin finish it.
        if let Some(key) = &earlier {
            let made = self.made_under(&connection, &t.project, key).await?;
            if let Some(made) = made.filter(|m| m.state.is_live()) {
                self.set_unresolved(&slot, None);
                self.own(&made.id, index);
                return Ok(made.id);
            }
        }
        let key = request
            .labels
            .get(tags::KEY)
            .cloned()
            .or(earlier)
            .unwrap_or_else(|| self.new_key(&request));
        if let Some(epoch) = request.labels.get(EPOCH_LABEL).and_then(|e| e.parse().ok()) {
            self.fenced_by(epoch);
        }
        let mut all_tags = request.labels.clone();
        all_tags.extend(request.tags.to_map());
        all_tags.insert(tags::KEY.to_owned(), key.clone());
        let (deadline, _) = Self::timeouts(connection.info());
        let params = ProvisionParams {
            spec: InstanceSpec {
                properties: properties(&request),
                tags: all_tags,
            },
            idempotency_key: key.clone(),
            epoch: self.epoch.load(Ordering::Relaxed),
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        };
        let params = serde_json::to_value(params).unwrap_or(Value::Null);
        // Until the plugin's answer is checked, the key is what finds what it made.
        self.set_unresolved(&slot, Some(&key));
        let answered = match connection
            .call(methods::PROVISION, params, deadline + TRANSIT)
            .await
        {
            Ok(answer) => {
                serde_json::from_value::<ProvisionResult>(answer)
                    .map_err(|e| self.backend(format!("instance.provision answered {e}")))?
                    .id
            }
            Err(CallError::Rpc(e)) if e.code != ErrorCode::DeadlineExceeded => {
                self.set_unresolved(&slot, None);
                return Err(self.rpc_error(methods::PROVISION, e));
            }
            Err(unknown) => {
                // Look by the key at once when the plugin still answers.
                if connection.ended_why().is_none() {
                    let made = self.made_under(&connection, &t.project, &key).await;
                    if let Ok(Some(made)) = made.map(|m| m.filter(|m| m.state.is_live())) {
                        self.set_unresolved(&slot, None);
                        self.own(&made.id, index);
                        return Ok(made.id);
                    }
                }
                return Err(self.backend(format!(
                    "instance.provision of {}/{}: {unknown}; its outcome is unknown, so tend looks for an instance with key {key} before it makes another",
                    t.group, t.slot
                )));
            }
        };
        let kept = self.confirm(&connection, &request, &key, answered).await?;
        self.set_unresolved(&slot, None);
        self.own(&kept, index);
        Ok(kept)
    }

    /// Destroys through the world the instance was seen in; one never seen (tend started
    /// since) is destroyed through every world, where an unknown id is success.
    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        let owner = self.owners.lock().ok().and_then(|o| o.get(id).copied());
        let worlds = self.worlds();
        let targets: Vec<Arc<World>> = match owner.and_then(|i| worlds.get(i)) {
            Some(world) => vec![world.clone()],
            None => worlds,
        };
        for world in targets {
            let connection = self.acting(&world).await?;
            self.destroy_in(&connection, id).await?;
        }
        if let Ok(mut owners) = self.owners.lock() {
            owners.remove(id);
        }
        Ok(())
    }

    /// Every instance of the project in every world; the same instance seen in two worlds
    /// (two configs over one backend) counts once.
    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let mut all: BTreeMap<String, ObservedInstance> = BTreeMap::new();
        for (index, world) in self.worlds().into_iter().enumerate() {
            let connection = self.connection(&world).await?;
            let filter = [(tags::PROJECT.to_owned(), selector.project.clone())]
                .into_iter()
                .collect();
            for instance in self.describe_where(&connection, filter).await? {
                match all.get(&instance.id) {
                    None => {
                        self.own(&instance.id, index);
                        all.insert(instance.id.clone(), instance);
                    }
                    // One instance, seen through two configs of one backend.
                    Some(seen) if seen.tags == instance.tags && seen.labels == instance.labels => {}
                    Some(seen) => {
                        return Err(self.backend(format!(
                            "reports instance {:?} under two of its configs, as {}/{} and as {}/{}: its ids are not unique across configs, so tend cannot tell them apart",
                            instance.id, seen.tags.group, seen.tags.slot, instance.tags.group, instance.tags.slot
                        )))
                    }
                }
            }
        }
        Ok(all.into_values().collect())
    }

    /// `instance.changed` from every world, those a later spec adds too. A plugin without
    /// the `watch` capability never sends one: its instances are seen at each look.
    async fn watch(
        &self,
        _selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if let Ok(mut changes) = self.changes.lock() {
            *changes = Some(tx.clone());
        }
        for world in self.worlds() {
            forward_changes(&world, tx.clone());
        }
        Ok(Some(rx))
    }

    async fn close(&self) {
        for world in self.worlds() {
            world.supervisor.close().await;
        }
    }
}

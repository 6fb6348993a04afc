//! Providers from anywhere: a plugin is any program speaking tend's protocol (JSON-RPC 2.0,
//! one message per line, on its stdin and stdout). `docs/plugins.md` is the contract.
//!
//! The host side: a [`PluginProvider`] starts its plugin on first use ([`supervise`]),
//! speaks to it ([`conn`]), forwards its stderr ([`logs`]), and makes it look like any
//! provider. A provision whose outcome is unknown (no answer in time, or the plugin died
//! during it) is looked up by its idempotency key before anything is made again.

pub mod conformance;
pub mod conn;
pub mod logs;
pub mod supervise;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use engine::provider::fenced::EPOCH_LABEL;
use engine::provider::{
    require_tags, tags, InstanceState, InstanceTags, ObservedInstance, Provider, ProviderError,
    ProviderEvent, ProvisionRequest, Selector,
};
use serde_json::{json, Value};
use tend_plugin::methods::{
    self, DescribeResult, InitializeResult, InstanceSpec, ProvisionParams, ProvisionResult,
};
use tend_plugin::ErrorCode;

use conn::{CallError, Launch};
use supervise::{Down, Supervisor};

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
    pub dir: std::path::PathBuf,
    /// Where their stderr goes.
    pub logs: logs::LogSink,
}

impl engine::provider::ProviderFactory for Plugins {
    fn make(
        &self,
        kind: &str,
        props: &BTreeMap<String, Value>,
    ) -> Option<std::sync::Arc<dyn Provider>> {
        let spec = PluginSpec::from_props(kind, props)?;
        Some(std::sync::Arc::new(PluginProvider::new(
            &spec,
            &self.dir,
            self.logs.clone(),
        )))
    }
}

/// Instances made by an external plugin.
pub struct PluginProvider {
    name: String,
    supervisor: Supervisor,
    /// Provisions whose outcome is unknown, by (project, group, slot, hash): their key.
    unresolved: Mutex<HashMap<[String; 4], String>>,
    keys: AtomicU64,
    epoch: AtomicI64,
}

impl PluginProvider {
    /// The provider of `spec`, started in `dir` (the spec's folder) when first used, its
    /// stderr going to `logs`.
    pub fn new(spec: &PluginSpec, dir: &Path, logs: logs::LogSink) -> PluginProvider {
        let launch = Launch::new(&spec.name, spec.command.clone(), dir.to_path_buf());
        PluginProvider {
            name: spec.name.clone(),
            supervisor: Supervisor::new(launch, spec.config.clone(), logs),
            unresolved: Mutex::new(HashMap::new()),
            keys: AtomicU64::new(0),
            epoch: AtomicI64::new(0),
        }
    }

    fn backend(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Backend {
            provider: self.name.clone(),
            detail: format!("plugin {}", detail.into()),
            source: None,
        }
    }

    async fn connection(&self) -> Result<std::sync::Arc<conn::Connection>, ProviderError> {
        self.supervisor
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

    /// The instance made under `key`, if the plugin shows one.
    async fn made_under(
        &self,
        connection: &conn::Connection,
        project: &str,
        key: &str,
    ) -> Result<Option<ObservedInstance>, ProviderError> {
        let filter = [
            (tags::PROJECT.to_owned(), project.to_owned()),
            (tags::KEY.to_owned(), key.to_owned()),
        ]
        .into_iter()
        .collect();
        let found = self.describe_where(connection, filter, project).await?;
        Ok(found.into_iter().next())
    }

    async fn describe_where(
        &self,
        connection: &conn::Connection,
        filter: BTreeMap<String, String>,
        project: &str,
    ) -> Result<Vec<ObservedInstance>, ProviderError> {
        let answer = connection
            .call(
                methods::DESCRIBE,
                json!({ "tags": filter }),
                DESCRIBE_DEADLINE,
            )
            .await
            .map_err(|e| self.backend(format!("instance.describe: {e}")))?;
        let answer: DescribeResult = serde_json::from_value(answer)
            .map_err(|e| self.backend(format!("instance.describe answered {e}")))?;
        let mut found = Vec::with_capacity(answer.instances.len());
        for instance in answer.instances {
            if filter.iter().any(|(k, v)| instance.tags.get(k) != Some(v)) {
                return Err(self.backend(format!(
                    "instance.describe answered instance {} that lacks the tags asked for ({})",
                    instance.id,
                    shown_tags(&filter)
                )));
            }
            let state = match instance.state.as_str() {
                "running" => InstanceState::Running,
                "starting" => InstanceState::Starting,
                "unhealthy" => InstanceState::Unhealthy,
                "dead" => InstanceState::Dead,
                other => {
                    return Err(self.backend(format!(
                        "instance {} has state {other:?}; a state is running, starting, unhealthy or dead",
                        instance.id
                    )))
                }
            };
            let typed = InstanceTags::from_map(&instance.tags);
            if let Some(missing) = typed.missing() {
                return Err(self.backend(format!(
                    "instance {} of project {project:?} has no tag {missing}: every instance must carry the tags it was made with",
                    instance.id
                )));
            }
            let labels = instance
                .tags
                .into_iter()
                .filter(|(k, _)| !typed.to_map().contains_key(k))
                .collect();
            found.push(ObservedInstance {
                id: instance.id,
                ports: typed.port_map(),
                tags: typed,
                labels,
                address: instance.address,
                state,
                started_at: instance.started_at.unwrap_or(0),
                ended: None,
                remains: 0,
            });
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
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
}

/// `k=v, k=v`
fn shown_tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
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

    fn validate(&self, props: &BTreeMap<String, Value>) -> Result<(), ProviderError> {
        match PluginSpec::from_props(&self.name, props) {
            Some(spec) if !spec.command.is_empty() => Ok(()),
            _ => Err(ProviderError::InvalidProps {
                provider: self.name.clone(),
                detail: "a plugin needs command = [program, args...]".to_owned(),
            }),
        }
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(&self.name, &request)?;
        self.supervisor
            .may_act()
            .await
            .map_err(|why| self.backend(why))?;
        let connection = self.connection().await?;
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
        // made before making anything, and make it again only under the same key.
        if let Some(key) = &earlier {
            if let Some(made) = self.made_under(&connection, &t.project, key).await? {
                if let Ok(mut u) = self.unresolved.lock() {
                    u.remove(&slot);
                }
                return Ok(made.id);
            }
        }
        let key = request
            .labels
            .get(tags::KEY)
            .cloned()
            .or(earlier)
            .unwrap_or_else(|| self.new_key(&request));
        let epoch = request
            .labels
            .get(EPOCH_LABEL)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        self.epoch.fetch_max(epoch, Ordering::Relaxed);
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
            epoch,
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        };
        let params = serde_json::to_value(params).unwrap_or(Value::Null);
        let answer = match connection
            .call(methods::PROVISION, params, deadline + TRANSIT)
            .await
        {
            Ok(answer) => answer,
            Err(CallError::Rpc(e)) => return Err(self.rpc_error(methods::PROVISION, e)),
            Err(unknown) => {
                if let Ok(mut u) = self.unresolved.lock() {
                    u.insert(slot.clone(), key.clone());
                }
                // Look by the key at once when the plugin still answers.
                if connection.ended_why().is_none() {
                    if let Ok(Some(made)) = self.made_under(&connection, &t.project, &key).await {
                        if let Ok(mut u) = self.unresolved.lock() {
                            u.remove(&slot);
                        }
                        return Ok(made.id);
                    }
                }
                return Err(self.backend(format!(
                    "instance.provision of {}/{}: {unknown}; its outcome is unknown, so tend looks for an instance with key {key} before it makes another",
                    t.group, t.slot
                )));
            }
        };
        let made: ProvisionResult = serde_json::from_value(answer)
            .map_err(|e| self.backend(format!("instance.provision answered {e}")))?;
        // What was made must show under its tags, or tend could never find it again.
        match self.made_under(&connection, &t.project, &key).await {
            Ok(Some(shown)) if shown.id == made.id => Ok(made.id),
            Ok(_) => {
                let removed = self.destroy(&made.id).await;
                Err(self.backend(format!(
                    "instance.provision made instance {} but instance.describe does not show it with its tags; {}",
                    made.id,
                    match removed {
                        Ok(()) => "tend removed it".to_owned(),
                        Err(e) => format!("tend could not remove it ({e}): remove it yourself"),
                    }
                )))
            }
            Err(e) => Err(e),
        }
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        self.supervisor
            .may_act()
            .await
            .map_err(|why| self.backend(why))?;
        let connection = self.connection().await?;
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

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let connection = self.connection().await?;
        let filter = [(tags::PROJECT.to_owned(), selector.project.clone())]
            .into_iter()
            .collect();
        self.describe_where(&connection, filter, &selector.project)
            .await
    }

    async fn watch(
        &self,
        _selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        let connection = self.connection().await?;
        if !connection.info().is_some_and(|i| i.capabilities.watch) {
            return Ok(None);
        }
        let mut changes = self.supervisor.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                if tx.send(ProviderEvent::Changed).await.is_err() {
                    break;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn close(&self) {
        self.supervisor.close().await;
    }
}

//! The `sim` provider: simulated instances kept as JSON under the state folder.
//!
//! It behaves like a real provider (ids, tags set at creation, describe by project) so
//! `plan` and spec tests have a real observed state to diff against. Time is a logical
//! counter, so runs are reproducible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use engine::provider::{
    no_settings, require_tags, InstanceState, ObservedInstance, Provider, ProviderError,
    ProvisionRequest, Selector,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

const NAME: &str = "sim";

/// What the sim keeps on disk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SimState {
    /// The next instance number (also the logical clock).
    pub next: u64,
    /// Every simulated instance, dead ones included until destroyed.
    pub instances: Vec<ObservedInstance>,
    /// Instances that `describe` does not show yet, until the given time (ms since epoch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hidden_until: BTreeMap<String, u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The `visible_after` setting, in milliseconds (0 when not set).
fn visible_after_ms(props: &BTreeMap<String, serde_json::Value>) -> Result<u64, ProviderError> {
    match props.get("visible_after") {
        None => Ok(0),
        Some(value) => value
            .as_str()
            .and_then(|t| t.parse::<engine::spec::Duration>().ok())
            .map(|d| d.as_millis())
            .ok_or_else(|| ProviderError::InvalidProps {
                provider: NAME.to_owned(),
                detail: format!("visible_after must be a duration, got {value}"),
            }),
    }
}

/// Simulated instances in `<state_dir>/sim/instances.json`.
pub struct SimProvider {
    file: PathBuf,
    lock: Mutex<()>,
}

fn backend(detail: String, source: Option<std::io::Error>) -> ProviderError {
    ProviderError::Backend {
        provider: NAME.to_owned(),
        detail,
        source: source.map(|e| Box::new(e) as _),
    }
}

impl SimProvider {
    /// A sim provider keeping its instances under `state_dir/sim/`.
    pub fn new(state_dir: &Path) -> Self {
        SimProvider {
            file: state_dir.join("sim").join("instances.json"),
            lock: Mutex::new(()),
        }
    }

    /// Reads the simulated world (empty when nothing was ever created).
    pub fn load(&self) -> Result<SimState, ProviderError> {
        match std::fs::read_to_string(&self.file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                backend(
                    format!("{} is not sim state: {e}", self.file.display()),
                    None,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SimState::default()),
            Err(e) => Err(backend(
                format!("cannot read {}", self.file.display()),
                Some(e),
            )),
        }
    }

    /// Writes the simulated world atomically.
    pub fn save(&self, state: &SimState) -> Result<(), ProviderError> {
        let io =
            |e: std::io::Error| backend(format!("cannot write {}", self.file.display()), Some(e));
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        let temp = self.file.with_extension("json.tmp");
        std::fs::write(&temp, text).map_err(io)?;
        std::fs::rename(&temp, &self.file).map_err(io)
    }

    /// Sets the state of instance `id`: how tests and `tend test` inject deaths and sickness.
    pub async fn set_state(&self, id: &str, state: InstanceState) -> Result<(), ProviderError> {
        let _guard = self.lock.lock().await;
        let mut world = self.load()?;
        let instance = world
            .instances
            .iter_mut()
            .find(|i| i.id == id)
            .ok_or_else(|| not_found(id))?;
        instance.state = state;
        self.save(&world)
    }

    /// Adds an instance exactly as given (tags and all): for fixtures that need duplicates,
    /// foreign instances or outdated hashes. Returns its id.
    pub async fn insert(&self, mut instance: ObservedInstance) -> Result<String, ProviderError> {
        let _guard = self.lock.lock().await;
        let mut world = self.load()?;
        world.next += 1;
        if instance.id.is_empty() {
            instance.id = format!("sim-{:06}", world.next);
        }
        if instance.started_at == 0 {
            instance.started_at = world.next;
        }
        let id = instance.id.clone();
        world.instances.push(instance);
        self.save(&world)?;
        Ok(id)
    }
}

fn not_found(id: &str) -> ProviderError {
    ProviderError::NotFound {
        provider: NAME.to_owned(),
        id: id.to_owned(),
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate(&self, props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        visible_after_ms(props)?;
        let mut others = props.clone();
        others.remove("visible_after");
        no_settings(NAME, &others)
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(NAME, &request)?;
        let hidden_for = visible_after_ms(&request.props)?;
        let address = request
            .address
            .unwrap_or_else(|| format!("{}-{}.sim:0", request.group, request.slot));
        let id = self
            .insert(ObservedInstance {
                id: String::new(),
                tags: request.tags,
                labels: request.labels,
                address: Some(address),
                state: InstanceState::Running,
                started_at: 0,
            })
            .await?;
        if hidden_for > 0 {
            let _guard = self.lock.lock().await;
            let mut world = self.load()?;
            world.hidden_until.insert(id.clone(), now_ms() + hidden_for);
            self.save(&world)?;
        }
        Ok(id)
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        let _guard = self.lock.lock().await;
        let mut world = self.load()?;
        let before = world.instances.len();
        world.instances.retain(|i| i.id != id);
        if world.instances.len() == before {
            return Err(not_found(id));
        }
        self.save(&world)
    }

    /// Looking one instance up by id sees it at once, even while listing does not yet.
    async fn alive(&self, id: &str, _selector: &Selector) -> Result<bool, ProviderError> {
        let world = self.load()?;
        Ok(world
            .instances
            .iter()
            .any(|i| i.id == id && i.state.is_live()))
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let world = self.load()?;
        let now = now_ms();
        let hidden = |id: &str| world.hidden_until.get(id).is_some_and(|t| *t > now);
        Ok(world
            .instances
            .iter()
            .filter(|i| i.tags.project == selector.project && !hidden(&i.id))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(group: &str, slot: u32) -> ProvisionRequest {
        let t = engine::provider::InstanceTags {
            project: "p".into(),
            group: group.into(),
            slot: slot.to_string(),
            hash: "abc".into(),
        };
        ProvisionRequest {
            group: group.into(),
            slot: engine::spec::Slot::Index(slot),
            tags: t,
            labels: BTreeMap::new(),
            props: BTreeMap::new(),
            command: vec![],
            env: BTreeMap::new(),
            files: BTreeMap::new(),
            workdir: None,
            address: None,
            stop_timeout: engine::spec::Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn instances_survive_a_new_provider_on_the_same_folder() -> Result<(), ProviderError> {
        let dir = tempfile::tempdir().map_err(|e| backend("tempdir".into(), Some(e)))?;
        let sim = SimProvider::new(dir.path());
        let a = sim.provision(request("web", 0)).await?;
        let b = sim.provision(request("web", 1)).await?;
        assert_ne!(a, b);
        sim.set_state(&a, InstanceState::Dead).await?;
        let again = SimProvider::new(dir.path());
        let seen = again
            .describe(&Selector {
                project: "p".into(),
            })
            .await?;
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].state, InstanceState::Dead);
        assert_eq!(seen[1].tags.slot, "1");
        assert!(again
            .describe(&Selector {
                project: "other".into()
            })
            .await?
            .is_empty());
        again.destroy(&a).await?;
        assert!(matches!(
            again.destroy(&a).await,
            Err(ProviderError::NotFound { .. })
        ));
        Ok(())
    }

    #[tokio::test]
    async fn refuses_untagged_instances() {
        let dir = tempfile::tempdir().ok();
        let sim = SimProvider::new(
            dir.as_ref()
                .map(|d| d.path())
                .unwrap_or(Path::new("/nonexistent")),
        );
        let mut req = request("web", 0);
        req.tags.hash.clear();
        assert!(sim.provision(req).await.is_err());
    }
}

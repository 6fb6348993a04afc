//! The `sim` provider: simulated instances, for plans, spec tests and the deterministic
//! simulation of the controller.
//!
//! It behaves like a real provider (ids, tags set at creation, describe by project, an
//! event when an instance dies) and answers health checks of its instances itself, from
//! the world's state. The CLI keeps the world in `.tend/sim/instances.json`; a simulation
//! keeps it in memory on virtual time, with a [`Chaos`] deciding which calls fail or hang
//! and how new instances behave.

mod world;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use engine::health::{ProbeError, RenderedProbe};
use engine::provider::{
    no_settings, require_tags, tags, InstanceState, ObservedInstance, Provider, ProviderError,
    ProviderEvent, ProvisionRequest, Selector,
};

pub use world::{
    Behaviour, CallFault, Calm, Change, Chaos, Observer, SimInstance, SimState, SimWorld,
};

use world::backend;

const NAME: &str = "sim";

/// The `visible_after` setting, in milliseconds (0 when not set).
/// The duration setting `key` in milliseconds (0 when not set).
fn duration_ms(
    props: &BTreeMap<String, serde_json::Value>,
    key: &str,
) -> Result<u64, ProviderError> {
    match props.get(key) {
        None => Ok(0),
        Some(value) => value
            .as_str()
            .and_then(|t| t.parse::<engine::spec::Duration>().ok())
            .map(|d| d.as_millis())
            .ok_or_else(|| ProviderError::InvalidProps {
                provider: NAME.to_owned(),
                detail: format!("{key} must be a duration, got {value}"),
            }),
    }
}

fn visible_after_ms(props: &BTreeMap<String, serde_json::Value>) -> Result<u64, ProviderError> {
    duration_ms(props, "visible_after")
}

fn not_found(id: &str) -> ProviderError {
    ProviderError::NotFound {
        provider: NAME.to_owned(),
        id: id.to_owned(),
    }
}

/// Simulated instances in a [`SimWorld`].
#[derive(Clone)]
pub struct SimProvider {
    world: SimWorld,
}

impl SimProvider {
    /// A sim provider keeping its instances in `state_dir/sim/world.jsonl`.
    pub fn new(state_dir: &Path) -> Self {
        SimProvider {
            world: SimWorld::in_file(state_dir.join("sim").join("world.jsonl")),
        }
    }

    /// A sim provider over `world` (a simulation's).
    pub fn with_world(world: SimWorld) -> Self {
        SimProvider { world }
    }

    /// The world it keeps.
    pub fn world(&self) -> &SimWorld {
        &self.world
    }

    /// Sets the state of instance `id`: how tests inject deaths and sickness.
    pub async fn set_state(&self, id: &str, state: InstanceState) -> Result<(), ProviderError> {
        let dead = state == InstanceState::Dead;
        self.world.with(|world, _| {
            let instance = world.instances.get_mut(id).ok_or_else(|| not_found(id))?;
            instance.instance.state = state;
            Ok((
                (),
                Some(Change::Fault {
                    id: id.to_owned(),
                    what: format!("set {state:?}"),
                }),
            ))
        })?;
        if dead {
            self.world.announce_gone(id);
        }
        Ok(())
    }

    /// Adds an instance exactly as given (tags and all): for fixtures that need duplicates,
    /// foreign instances or outdated hashes. Returns its id.
    pub async fn insert(&self, instance: ObservedInstance) -> Result<String, ProviderError> {
        self.world.with(|world, now| {
            let mut instance = instance;
            let id = world.new_id();
            if instance.id.is_empty() {
                instance.id = id;
            }
            if instance.started_at == 0 {
                instance.started_at = now;
            }
            let id = instance.id.clone();
            let instance = SimInstance {
                instance,
                behaviour: Behaviour::default(),
                hung: false,
                flapping: false,
                passed_check_at: None,
                hidden_until: None,
            };
            world.instances.insert(id.clone(), instance);
            Ok((id.clone(), Some(Change::Provisioned { id })))
        })
    }
}

/// Waits out a call's fault; the error is the fault's.
async fn suffer(fault: CallFault, what: &str) -> Result<(), ProviderError> {
    match fault {
        CallFault::None => Ok(()),
        CallFault::Slow(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        CallFault::Fail(d, why) => {
            tokio::time::sleep(d).await;
            Err(backend(format!("{what} failed: {why}")))
        }
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate(&self, props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        visible_after_ms(props)?;
        duration_ms(props, "ready_after")?;
        let mut others = props.clone();
        others.remove("visible_after");
        others.remove("ready_after");
        no_settings(NAME, &others)
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(NAME, &request)?;
        if let Some(key) = request.labels.get(tags::KEY) {
            let project = &request.tags.project;
            let made = self.world.read(|world, _| {
                world
                    .instances
                    .values()
                    .map(|i| &i.instance)
                    .find(|i| {
                        i.state.is_live()
                            && &i.tags.project == project
                            && i.labels.get(tags::KEY) == Some(key)
                    })
                    .map(|i| i.id.clone())
            })?;
            if let Some(id) = made {
                return Ok(id);
            }
        }
        let hidden_for = visible_after_ms(&request.props)?;
        let t = &request.tags;
        self.world.notify(Change::Provisioning {
            group: t.group.clone(),
            slot: t.slot.clone(),
            hash: t.hash.clone(),
        });
        let chaos = self.world.chaos.clone();
        suffer(chaos.provision(&t.group, &t.slot, &t.hash), "provision").await?;
        let mut behaviour = chaos.behaviour(&t.group, &t.hash);
        behaviour.ready_after_ms = behaviour
            .ready_after_ms
            .max(duration_ms(&request.props, "ready_after")?);
        let address = request
            .address
            .clone()
            .unwrap_or_else(|| format!("{}-{}.sim:0", request.group, request.slot));
        let dies_after = behaviour.dies_after_ms;
        let id = self.world.with(|world, now| {
            let id = world.new_id();
            let hidden_until = (hidden_for > 0).then_some(now + hidden_for);
            let made = SimInstance {
                instance: ObservedInstance {
                    id: id.clone(),
                    tags: request.tags.clone(),
                    labels: request.labels.clone(),
                    address: Some(address),
                    ports: request.tags.port_map(),
                    state: InstanceState::Running,
                    started_at: now,
                    ended: None,
                    remains: 0,
                },
                behaviour,
                hung: false,
                flapping: false,
                passed_check_at: None,
                hidden_until,
            };
            world.instances.insert(id.clone(), made);
            Ok((id.clone(), Some(Change::Provisioned { id })))
        })?;
        if let Some(ms) = dies_after {
            self.world
                .schedule_death(id.clone(), Duration::from_millis(ms));
        }
        Ok(id)
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        // Observers see the call when it is made, with the world as tend saw it then.
        self.world.notify(Change::Destroying { id: id.to_owned() });
        suffer(self.world.chaos.destroy(id), "destroy").await?;
        self.world.with(|world, _| {
            if world.instances.remove(id).is_none() {
                return Err(not_found(id));
            }
            Ok(((), Some(Change::Destroyed { id: id.to_owned() })))
        })
    }

    /// Looking one instance up by id sees it at once, even while listing does not yet.
    async fn alive(&self, id: &str, _selector: &Selector) -> Result<bool, ProviderError> {
        self.world.read(|world, _| {
            world
                .instances
                .get(id)
                .is_some_and(|i| i.instance.state.is_live())
        })
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        suffer(self.world.chaos.describe(), "describe").await?;
        self.world.read(|world, now| {
            world
                .instances
                .values()
                .filter(|i| {
                    i.instance.tags.project == selector.project
                        && i.hidden_until.is_none_or(|t| t <= now)
                })
                .map(|i| i.instance.clone())
                .collect()
        })
    }

    /// Sim instances answer their checks from the world: a hung one times out, one that
    /// does not work (or is not ready yet, or flaps) refuses.
    fn probes_by_id(&self) -> bool {
        true
    }

    async fn probe(
        &self,
        id: &str,
        _probe: &RenderedProbe,
        timeout: Duration,
    ) -> Option<Result<(), ProbeError>> {
        let found = self
            .world
            .read(|world, now| {
                world.instances.get(id).map(|i| {
                    (
                        i.hung && i.instance.state.is_live(),
                        i.serves(now) && i.instance.state != InstanceState::Unhealthy,
                    )
                })
            })
            .ok()
            .flatten();
        Some(match found {
            Some((true, _)) => {
                tokio::time::sleep(timeout).await;
                Err(ProbeError::Timeout(timeout))
            }
            Some((false, true)) => {
                self.world.note_passed_check(id);
                Ok(())
            }
            Some((false, false)) => Err(ProbeError::Io("connection refused (simulated)".into())),
            None => Err(ProbeError::Io("no such instance (simulated)".into())),
        })
    }

    /// Deaths are told at once.
    async fn watch(
        &self,
        _selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut inner) = self.world.inner.lock() {
            inner.watchers.push(tx);
        }
        let (events, receiver) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if events.send(event).await.is_err() {
                    break;
                }
            }
        });
        Ok(Some(receiver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn request(group: &str, slot: u32) -> ProvisionRequest {
        let t = engine::provider::InstanceTags {
            project: "p".into(),
            group: group.into(),
            slot: slot.to_string(),
            hash: "abc".into(),
            ports: Default::default(),
            format: engine::format::INSTANCE,
        };
        ProvisionRequest::bare(engine::spec::Slot::Index(slot), t)
    }

    #[tokio::test]
    async fn instances_survive_a_new_provider_on_the_same_folder() -> Result<(), ProviderError> {
        let dir = tempfile::tempdir().map_err(|e| backend(e.to_string()))?;
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

    struct BadVersion;

    impl Chaos for BadVersion {
        fn behaviour(&self, _group: &str, hash: &str) -> Behaviour {
            Behaviour {
                ready_after_ms: 2_000,
                works: hash != "bad",
                dies_after_ms: None,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn health_follows_the_world_on_virtual_time() -> Result<(), ProviderError> {
        let clock = engine::clock::Clock::starting_at(1_000_000);
        let world = SimWorld::in_memory(clock, Arc::new(BadVersion), None);
        let sim = SimProvider::with_world(world.clone());
        let probe = RenderedProbe::Tcp {
            address: "x".into(),
        };
        let t = Duration::from_secs(1);
        let good = sim.provision(request("web", 0)).await?;
        let mut bad_request = request("web", 1);
        bad_request.tags.hash = "bad".into();
        let bad = sim.provision(bad_request).await?;
        assert!(
            matches!(sim.probe(&good, &probe, t).await, Some(Err(_))),
            "ready at once"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(sim.probe(&good, &probe, t).await, Some(Ok(())));
        assert!(matches!(sim.probe(&bad, &probe, t).await, Some(Err(_))));
        world.set_hung(&good, true);
        assert_eq!(
            sim.probe(&good, &probe, t).await,
            Some(Err(ProbeError::Timeout(t)))
        );
        let mut events = sim
            .watch(&Selector {
                project: "p".into(),
            })
            .await?
            .ok_or_else(|| backend("no watch".into()))?;
        assert!(world.kill(&good));
        assert_eq!(
            events.recv().await,
            Some(ProviderEvent::Gone {
                id: good.clone(),
                why: None
            })
        );
        Ok(())
    }
}

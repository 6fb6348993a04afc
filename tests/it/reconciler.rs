//! The reconciler against providers that misbehave in ways no real one should (a panic in
//! one action fails that action alone, and everything else goes on), and against one that
//! can start a dead instance again in place (when a heal does, and when it makes a new one).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::clock::Clock;
use engine::exec::ExecOptions;
use engine::provider::{
    InstanceState, InstanceTags, ObservedInstance, Provider, ProviderError, ProviderSet,
    ProvisionRequest, Selector,
};
use engine::reconcile::{converge, Converged, Event, Mode, Options, Reconciler};
use engine::spec::{Allocation, Flavor, Group, ProviderSpec, Spec, UpdatePolicy};
use engine::store::Store;
use providers::sim::{Calm, SimProvider, SimWorld};

/// A provider with a bug: it panics when asked to make anything.
struct Panicking;

#[async_trait]
impl Provider for Panicking {
    fn name(&self) -> &str {
        "buggy"
    }

    fn validate(&self, _props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn provision(&self, _request: ProvisionRequest) -> Result<String, ProviderError> {
        panic!("the buggy provider fell over")
    }

    async fn destroy(&self, _id: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn describe(&self, _selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        Ok(Vec::new())
    }
}

fn group(name: &str, provider: &str, size: u32) -> Group {
    Group {
        name: name.into(),
        allocation: Allocation::Size(size),
        provider: ProviderSpec {
            kind: provider.into(),
            props: Default::default(),
        },
        flavor: Flavor {
            command: vec![name.into()],
            ..Flavor::default()
        },
        depends_on: vec![],
        reads_groups: vec![],
        update: UpdatePolicy::default(),
        origin: None,
        expose: None,
    }
}

#[test]
fn a_panic_in_one_action_fails_it_alone() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::new(dir.path());
    let spec = Spec {
        project: "panics".into(),
        groups: vec![group("fine", "sim", 3), group("broken", "buggy", 1)],
        ports: Default::default(),
    };
    let serial = store.commit(&spec).map(|a| a.serial).unwrap_or(0);
    let world = SimWorld::in_memory(Clock::real(), Arc::new(Calm), None);
    let mut providers = ProviderSet::default();
    providers.insert(Arc::new(SimProvider::with_world(world.clone())));
    providers.insert(Arc::new(Panicking));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let events: engine::reconcile::EventSink = Arc::new(move |event| {
        if let Event::Finished {
            action,
            outcome: Err(e),
            ..
        } = event
        {
            if let Ok(mut list) = seen.lock() {
                list.push(format!("{}/{}: {e}", action.group, action.slot));
            }
        }
    });
    let ended = runtime.block_on(async {
        let mut reconciler = Reconciler::new(
            spec,
            serial,
            Vec::new(),
            store,
            providers,
            Arc::new(|_: &str| None),
            Clock::real(),
            Options {
                exec: ExecOptions::default(),
                mode: Mode::Apply,
                balancers: Default::default(),
                quick_heals_from: engine::reconcile::QUICK_HEALS_FROM,
            },
            events,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
        converge(&mut reconciler, &mut stop).await
    });
    // The run went on to the end: the other group is up, and only the buggy action failed.
    assert!(matches!(ended, Ok(Converged::Stuck(_))), "{ended:?}");
    assert_eq!(world.instances().len(), 3);
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0]
            .starts_with("broken/0: internal error (a bug in tend): the buggy provider fell over"),
        "{failures:?}"
    );
}

/// Instances in memory that can be started again in place, as containers can. Counts what
/// it made; `refuse` makes every start in place fail.
#[derive(Default)]
struct Restartable {
    instances: Mutex<BTreeMap<String, (InstanceTags, InstanceState)>>,
    made: Mutex<u32>,
    refuse: std::sync::atomic::AtomicBool,
}

impl Restartable {
    fn live(&self) -> Vec<String> {
        self.instances
            .lock()
            .map(|i| {
                i.iter()
                    .filter(|(_, (_, s))| s.is_live())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn all(&self) -> Vec<String> {
        self.instances
            .lock()
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn kill(&self, id: &str) {
        if let Some((_, state)) = self
            .instances
            .lock()
            .ok()
            .as_mut()
            .and_then(|i| i.get_mut(id))
        {
            *state = InstanceState::Dead;
        }
    }
}

#[async_trait]
impl Provider for Restartable {
    fn name(&self) -> &str {
        "restartable"
    }

    fn validate(&self, _props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        *made += 1;
        let id = format!("i{made}");
        if let Ok(mut instances) = self.instances.lock() {
            instances.insert(id.clone(), (request.tags, InstanceState::Running));
        }
        Ok(id)
    }

    async fn restart(&self, id: &str) -> Result<bool, ProviderError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ProviderError::Backend {
                provider: "restartable".into(),
                detail: "will not start".into(),
                source: None,
            });
        }
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        match instances.get_mut(id) {
            Some((_, state)) => {
                *state = InstanceState::Running;
                Ok(true)
            }
            None => Err(ProviderError::NotFound {
                provider: "restartable".into(),
                id: id.into(),
            }),
        }
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        if let Ok(mut instances) = self.instances.lock() {
            instances.remove(id);
        }
        Ok(())
    }

    async fn describe(&self, _selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        Ok(instances
            .iter()
            .map(|(id, (tags, state))| ObservedInstance {
                id: id.clone(),
                tags: tags.clone(),
                labels: Default::default(),
                address: None,
                ports: Default::default(),
                state: *state,
                started_at: 0,
                ended: None,
                remains: 0,
            })
            .collect())
    }
}

/// Runs rounds (on virtual time) until the project converges; the heals that finished on
/// the way, as "id" for one made anew and "id in place" for one started again.
async fn settle(reconciler: &mut Reconciler, healed: &Mutex<Vec<String>>) -> Vec<String> {
    if let Ok(mut h) = healed.lock() {
        h.clear();
    }
    for _ in 0..100 {
        let round = reconciler.round().await.unwrap_or_else(|e| panic!("{e}"));
        if round.converged {
            return healed.lock().map(|h| h.clone()).unwrap_or_default();
        }
        reconciler.wait().await;
    }
    panic!("did not converge");
}

#[test]
fn a_dead_instance_is_started_in_place_until_that_does_not_hold() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::new(dir.path());
    let spec = Spec {
        project: "in-place".into(),
        groups: vec![group("app", "restartable", 1)],
        ports: Default::default(),
    };
    let serial = store.commit(&spec).map(|a| a.serial).unwrap_or(0);
    let provider = Arc::new(Restartable::default());
    let mut providers = ProviderSet::default();
    providers.insert(provider.clone());
    let healed = Arc::new(Mutex::new(Vec::new()));
    let seen = healed.clone();
    let events: engine::reconcile::EventSink = Arc::new(move |event| {
        if let Event::Finished {
            action,
            outcome: Ok(done),
            ..
        } = event
        {
            if action.action == engine::plan::ActionKind::Heal {
                let id = done.instance.unwrap_or_default();
                let how = if done.in_place { " in place" } else { "" };
                if let Ok(mut list) = seen.lock() {
                    list.push(format!("{id}{how}"));
                }
            }
        }
    });
    runtime.block_on(async {
        let mut r = Reconciler::new(
            spec,
            serial,
            Vec::new(),
            store,
            providers,
            Arc::new(|_: &str| None),
            Clock::real(),
            Options {
                exec: ExecOptions::default(),
                mode: Mode::Run,
                balancers: Default::default(),
                quick_heals_from: engine::reconcile::QUICK_HEALS_FROM,
            },
            events,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let holds = std::time::Duration::from_secs(11);
        settle(&mut r, &healed).await;
        assert_eq!(provider.live(), ["i1"]);
        tokio::time::sleep(holds).await;

        // Dead at the version it serves: the same instance starts again.
        provider.kill("i1");
        assert_eq!(settle(&mut r, &healed).await, ["i1 in place"]);
        assert_eq!(provider.all(), ["i1"]);

        // Dead again before it held: it keeps failing in place, so a new one replaces it.
        provider.kill("i1");
        assert_eq!(settle(&mut r, &healed).await, ["i2"]);
        assert_eq!(provider.all(), ["i2"]);

        // Until an instance of the slot holds, its heals make new instances.
        provider.kill("i2");
        assert_eq!(settle(&mut r, &healed).await, ["i3"]);

        // One held: the next death is started in place again.
        tokio::time::sleep(holds).await;
        r.round().await.unwrap_or_else(|e| panic!("{e}"));
        provider.kill("i3");
        assert_eq!(settle(&mut r, &healed).await, ["i3 in place"]);

        // A start in place that fails gets a new instance in the same heal.
        tokio::time::sleep(holds).await;
        r.round().await.unwrap_or_else(|e| panic!("{e}"));
        provider
            .refuse
            .store(true, std::sync::atomic::Ordering::SeqCst);
        provider.kill("i3");
        assert_eq!(settle(&mut r, &healed).await, ["i4"]);
        assert_eq!(provider.all(), ["i4"]);
    });
}

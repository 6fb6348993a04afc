//! The reconciler against providers that misbehave in ways no real one should: a panic in
//! one action fails that action alone, and everything else goes on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::clock::Clock;
use engine::exec::ExecOptions;
use engine::provider::{
    ObservedInstance, Provider, ProviderError, ProviderSet, ProvisionRequest, Selector,
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

//! Fencing for providers: a replicated controller's provider calls pass a gate first.
//!
//! Providers cannot check who leads, so the leader checks for them: every call that
//! makes, removes or restarts an instance asks the [`Gate`] (which refuses once leadership
//! went unconfirmed too long), writes an intent before a create or destroy, and tags what it
//! creates with `tend.epoch` (the leader's fencing token) and `tend.op` (the intent). Reads
//! (`describe`, probes, watches) pass freely: a standby may look. A call still running when
//! the fence passes is abandoned, so it cannot land long after another leader took over
//! (a provider may still have done it by then: the new leader's first look finds it by
//! its tags, and reaps what is twice in a slot).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    ObservedInstance, Provider, ProviderError, ProviderEvent, ProviderSet, ProvisionRequest,
    Selector,
};
use crate::health::{ProbeError, RenderedProbe};

/// The label naming the leader's fencing token an instance was created under.
pub const EPOCH_LABEL: &str = "tend.epoch";
/// The label naming the intent an instance was created by.
pub const OP_LABEL: &str = "tend.op";

/// A create or destroy about to be made.
#[derive(Clone, Debug, PartialEq)]
pub struct Intended {
    /// `create` or `destroy`.
    pub action: &'static str,
    /// The group.
    pub group: String,
    /// The slot, for a create.
    pub slot: String,
    /// The instance, for a destroy.
    pub instance: String,
}

/// What decides whether this process may act, and records what it is about to do.
#[async_trait]
pub trait Gate: Send + Sync {
    /// The fencing token instances are tagged with.
    fn epoch(&self) -> i64;
    /// `Err(why)` when this process must not act now.
    fn check(&self) -> Result<(), String>;
    /// A new operation id.
    fn next_op(&self) -> String;
    /// Records intent `op` before the call; `Err(why)` stops the call.
    async fn intend(&self, op: &str, what: &Intended) -> Result<(), String>;
    /// Clears intent `op` once its call ended.
    async fn done(&self, op: &str);
    /// Resolves once this process must not act any more (its fence passed).
    async fn lapsed(&self) {
        while self.check().is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs `call`, abandoned if the fence passes first: a call still running then could
/// land after another leader took over. `Err` when abandoned: its outcome is unknown.
async fn within_fence<T>(
    gate: &dyn Gate,
    provider: &str,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<Result<T, ProviderError>, ProviderError> {
    tokio::select! {
        done = call => Ok(done),
        _ = gate.lapsed() => Err(ProviderError::Backend {
            provider: provider.to_owned(),
            detail: "abandoned: this controller's leadership lapsed during the call".to_owned(),
            source: None,
        }),
    }
}

/// `providers` with every call that acts passing `gate` first.
pub fn fence(providers: &ProviderSet, gate: Arc<dyn Gate>) -> ProviderSet {
    providers.wrapped(Arc::new(
        move |inner: Arc<dyn Provider>| -> Arc<dyn Provider> {
            Arc::new(Fenced {
                inner,
                gate: gate.clone(),
            })
        },
    ))
}

/// One provider behind a gate.
struct Fenced {
    inner: Arc<dyn Provider>,
    gate: Arc<dyn Gate>,
}

impl Fenced {
    fn refused(&self, why: String) -> ProviderError {
        ProviderError::Backend {
            provider: self.inner.name().to_owned(),
            detail: why,
            source: None,
        }
    }
}

#[async_trait]
impl Provider for Fenced {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn validate(&self, props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        self.inner.validate(props)
    }

    async fn provision(&self, mut request: ProvisionRequest) -> Result<String, ProviderError> {
        self.gate.check().map_err(|w| self.refused(w))?;
        let op = self.gate.next_op();
        let what = Intended {
            action: "create",
            group: request.group.clone(),
            slot: request.slot.to_string(),
            instance: String::new(),
        };
        self.gate
            .intend(&op, &what)
            .await
            .map_err(|w| self.refused(w))?;
        self.inner.fenced_by(self.gate.epoch());
        request
            .labels
            .insert(EPOCH_LABEL.to_owned(), self.gate.epoch().to_string());
        request.labels.insert(OP_LABEL.to_owned(), op.clone());
        // An abandoned call keeps its intent: the next leader is told of it.
        let made = within_fence(&*self.gate, self.name(), self.inner.provision(request)).await?;
        self.gate.done(&op).await;
        made
    }

    fn publishes_ports(&self) -> bool {
        self.inner.publishes_ports()
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        self.gate.check().map_err(|w| self.refused(w))?;
        let op = self.gate.next_op();
        let what = Intended {
            action: "destroy",
            group: String::new(),
            slot: String::new(),
            instance: id.to_owned(),
        };
        self.gate
            .intend(&op, &what)
            .await
            .map_err(|w| self.refused(w))?;
        self.inner.fenced_by(self.gate.epoch());
        let removed = within_fence(&*self.gate, self.name(), self.inner.destroy(id)).await?;
        self.gate.done(&op).await;
        removed
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        self.inner.describe(selector).await
    }

    async fn alive(&self, id: &str, selector: &Selector) -> Result<bool, ProviderError> {
        self.inner.alive(id, selector).await
    }

    async fn has_remains(&self, id: &str) -> Result<bool, ProviderError> {
        self.inner.has_remains(id).await
    }

    async fn restart(&self, id: &str) -> Result<bool, ProviderError> {
        self.gate.check().map_err(|w| self.refused(w))?;
        within_fence(&*self.gate, self.name(), self.inner.restart(id)).await?
    }

    async fn probe(
        &self,
        id: &str,
        probe: &RenderedProbe,
        timeout: Duration,
    ) -> Option<Result<(), ProbeError>> {
        self.inner.probe(id, probe, timeout).await
    }

    fn probes_by_id(&self) -> bool {
        self.inner.probes_by_id()
    }

    async fn watch(
        &self,
        selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        self.inner.watch(selector).await
    }

    async fn close(&self) {
        self.inner.close().await
    }

    async fn about(&self) -> Option<String> {
        self.inner.about().await
    }

    fn fenced_by(&self, epoch: i64) {
        self.inner.fenced_by(epoch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    /// A provider that remembers the fencing token it was last told.
    #[derive(Default)]
    struct Told(AtomicI64);

    #[async_trait]
    impl Provider for Told {
        fn name(&self) -> &str {
            "told"
        }
        fn validate(&self, _: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn provision(&self, _: ProvisionRequest) -> Result<String, ProviderError> {
            Ok("made".to_owned())
        }
        async fn destroy(&self, _: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn describe(&self, _: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
            Ok(Vec::new())
        }
        fn fenced_by(&self, epoch: i64) {
            self.0.store(epoch, Ordering::Relaxed);
        }
    }

    struct Leading(i64);

    #[async_trait]
    impl Gate for Leading {
        fn epoch(&self) -> i64 {
            self.0
        }
        fn check(&self) -> Result<(), String> {
            Ok(())
        }
        fn next_op(&self) -> String {
            "op".to_owned()
        }
        async fn intend(&self, _: &str, _: &Intended) -> Result<(), String> {
            Ok(())
        }
        async fn done(&self, _: &str) {}
    }

    #[tokio::test]
    async fn destroys_and_provisions_pass_the_leaders_epoch_to_the_provider() {
        let told = Arc::new(Told::default());
        let mut set = ProviderSet::default();
        set.insert(told.clone());
        let fenced = fence(&set, Arc::new(Leading(7)));
        let provider = fenced.get("told").unwrap();
        provider.destroy("x").await.unwrap();
        assert_eq!(told.0.load(Ordering::Relaxed), 7);
        let tags = super::super::InstanceTags {
            project: "p".into(),
            group: "g".into(),
            slot: "0".into(),
            hash: "h".into(),
            ports: Vec::new(),
            format: crate::format::INSTANCE,
        };
        let fenced = fence(&set, Arc::new(Leading(9)));
        let request = ProvisionRequest::bare(crate::spec::Slot::Index(0), tags);
        fenced
            .get("told")
            .unwrap()
            .provision(request)
            .await
            .unwrap();
        assert_eq!(told.0.load(Ordering::Relaxed), 9);
    }
}

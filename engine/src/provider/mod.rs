//! The provider contract: how instances come to exist, and how they are observed.
//!
//! Providers keep no private truth: every instance carries its tags on the real resource,
//! and observed state is rebuilt from those tags alone.

pub mod fenced;
mod observe;
mod types;

pub use observe::{error_chain, observe, Observed, PartialView, ProviderFactory, ProviderSet};
pub use types::{
    tags, InstanceState, InstanceTags, ObservedInstance, ProviderEvent, ProvisionRequest, Selector,
    Tags,
};

use std::time::Duration;

use async_trait::async_trait;

use crate::fault::Fault;
use crate::health::{ProbeError, RenderedProbe};

/// Errors from a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider settings in the spec are wrong.
    #[error("invalid {provider} settings: {detail}")]
    InvalidProps {
        /// The provider.
        provider: String,
        /// What is wrong.
        detail: String,
    },
    /// The instance does not exist (any more).
    #[error("{provider} instance {id} not found")]
    NotFound {
        /// The provider.
        provider: String,
        /// The instance id.
        id: String,
    },
    /// The spec names a provider this build does not have.
    #[error("provider {0:?} is not available in this build of tend")]
    Unknown(String),
    /// The provider's backend failed or is unreachable.
    #[error("{provider}: {detail}")]
    Backend {
        /// The provider.
        provider: String,
        /// What failed.
        detail: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An instance of the project was made by a newer tend, with tags of a format this one
    /// does not know: nothing is planned for the project, so that instance is never
    /// replaced, destroyed or taken for an orphan by this tend.
    #[error(transparent)]
    NewerFormat(#[from] crate::format::NewerFormat),
}

impl ProviderError {
    /// The backend of `provider` failed: `detail` says how.
    pub fn backend(provider: &str, detail: String) -> ProviderError {
        ProviderError::Backend {
            provider: provider.to_owned(),
            detail,
            source: None,
        }
    }

    /// The settings of `provider` in the spec are wrong: `detail` says how.
    pub fn invalid(provider: &str, detail: String) -> ProviderError {
        ProviderError::InvalidProps {
            provider: provider.to_owned(),
            detail,
        }
    }

    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            ProviderError::InvalidProps { .. } | ProviderError::Unknown(_) => Fault::Spec,
            ProviderError::NotFound { .. } | ProviderError::Backend { .. } => Fault::Environment,
            ProviderError::NewerFormat(e) => e.fault(),
        }
    }
}

/// Checks that a provider that takes no settings got none.
pub fn no_settings(
    provider: &str,
    props: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<(), ProviderError> {
    match props.keys().next() {
        None => Ok(()),
        Some(key) => Err(ProviderError::InvalidProps {
            provider: provider.to_owned(),
            detail: format!("{provider} takes no settings, got {key:?}"),
        }),
    }
}

/// Refuses a request that lacks one of the four `tend.*` tags: no instance is ever made
/// that tend could not find again.
pub fn require_tags(provider: &str, request: &ProvisionRequest) -> Result<(), ProviderError> {
    match request.tags.missing() {
        None => Ok(()),
        Some(key) => Err(ProviderError::Backend {
            provider: provider.to_owned(),
            detail: format!("refusing to create an instance without tag {key}"),
            source: None,
        }),
    }
}

/// One way of making instances. Object-safe; one implementation per provider module.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name as used in specs (`process`, `docker`, `sim`).
    fn name(&self) -> &str;

    /// Checks a group's provider settings before anything runs.
    fn validate(
        &self,
        props: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<(), ProviderError>;

    /// Creates one instance with its tags set atomically; returns the instance id.
    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError>;

    /// True when an instance is reached on other ports than its own (a container's ports
    /// published on host ports the engine picks): `describe` then reports them in
    /// `ObservedInstance::ports`.
    fn publishes_ports(&self) -> bool {
        false
    }

    /// Removes the instance `id`.
    async fn destroy(&self, id: &str) -> Result<(), ProviderError>;

    /// Every instance matching `selector`, read back from the provider.
    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError>;

    /// Whether instance `id` still runs. The default asks `describe`; providers that can
    /// look one instance up directly override it.
    async fn alive(&self, id: &str, selector: &Selector) -> Result<bool, ProviderError> {
        Ok(self
            .describe(selector)
            .await?
            .iter()
            .any(|i| i.id == id && i.state.is_live()))
    }

    /// True when instance `id`, whose main process is gone, left something running that may
    /// hold what its replacement needs (a port, a lock): a heal then removes the remains
    /// before it makes the replacement, not after. The default: nothing is left.
    async fn has_remains(&self, _id: &str) -> Result<bool, ProviderError> {
        Ok(false)
    }

    /// Starts instance `id`, whose program exited, again in place: the same instance, with
    /// its id, tags, configuration and files, only its program started anew. Cheaper than a
    /// new instance, so a heal tries it first for a dead instance of the version it makes.
    /// `Ok(true)` when it started (or already runs); `Ok(false)`, the default, when this
    /// provider cannot start an instance again; `NotFound` when it is gone. On anything but
    /// `Ok(true)` the heal makes a new instance instead.
    async fn restart(&self, _id: &str) -> Result<bool, ProviderError> {
        Ok(false)
    }

    /// Answers a health probe of instance `id` itself, for providers whose instances are
    /// simulated (`sim`). `None`, the default, means the probe goes to the instance over the
    /// network.
    async fn probe(
        &self,
        _id: &str,
        _probe: &RenderedProbe,
        _timeout: Duration,
    ) -> Option<Result<(), ProbeError>> {
        None
    }

    /// True when `probe` answers for the instance itself (by id), whatever its address: two
    /// instances with one address can then still be told apart.
    fn probes_by_id(&self) -> bool {
        false
    }

    /// Says that the calls that follow are made under fencing token `epoch` (a replicated
    /// controller's lead): a provider that can refuse stale calls passes it on. The
    /// default: nothing to pass it to.
    fn fenced_by(&self, _epoch: i64) {}

    /// What the provider drives outside tend, for `status`: the tool it runs, where it is
    /// and its version, or why it has none. `None`, the default, for providers that drive
    /// no tool of their own.
    async fn about(&self) -> Option<String> {
        None
    }

    /// Ends what the provider runs for tend itself (a plugin's process, by its shutdown
    /// sequence); instances stay as they are. The default: nothing to end.
    async fn close(&self) {}

    /// A stream of changes for instant detection of exits, when the provider has one.
    /// Callers fall back to periodic `describe` when this is `None`.
    async fn watch(
        &self,
        _selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        Ok(None)
    }
}

/// Runs one health probe of instance `id`: answered by its provider when the provider
/// simulates its instances, over the network otherwise.
pub async fn probe_instance(
    provider: &dyn Provider,
    id: &str,
    probe: &RenderedProbe,
    timeout: Duration,
) -> Result<(), ProbeError> {
    match provider.probe(id, probe, timeout).await {
        Some(answer) => answer,
        None => crate::health::probe(probe, timeout).await,
    }
}

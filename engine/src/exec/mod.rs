//! Performing actions through the providers, one at a time: create, heal, replace (in place
//! or with surge) and destroy, with retries, health gates and `min_ready`.
//!
//! An action finishes only when its new instance is healthy (and, for a rolling replace,
//! has stayed healthy for `min_ready`), so whatever waits for it waits for health. Nothing
//! is destroyed that the action does not name. Which actions run, and when, is decided by
//! the planner and the reconciler (`crate::reconcile`), never here.

mod perform;
mod ports;
mod render;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::provider::ProviderError;
use crate::spec::{Group, Spec, SpecHash, Template};

pub use perform::perform;
pub use ports::{NoFreePort, PortAllocator, SharedPorts};
pub use render::{context, render_instance, RenderError, RenderedInstance};

/// How actions are performed.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Provider calls (create, destroy) in flight at once; health gates do not count.
    pub parallelism: usize,
    /// Attempts of a provider call before it counts as failed.
    pub attempts: u32,
    /// How long a new instance may take to turn healthy when no rolling policy says.
    pub health_timeout: Duration,
    /// Where instance ports come from when set (`--ports`); else the spec's range, else
    /// the default.
    pub ports: Option<crate::spec::PortRange>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            parallelism: 10,
            attempts: 3,
            health_timeout: Duration::from_secs(300),
            ports: None,
        }
    }
}

/// What a finished action made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    /// The instance created, if any.
    pub instance: Option<String>,
    /// What its health check showed, such as `answers http://127.0.0.1:8001/`.
    pub checked: Option<String>,
    /// The heal started the dead instance again in place (`instance` is the one it healed)
    /// instead of making a new one.
    pub in_place: bool,
}

/// Why an action failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    /// The action names a group the spec does not have.
    #[error("group {0:?} is not in the spec")]
    UnknownGroup(String),
    /// The provider named by the action is not in this build.
    #[error("{0}")]
    UnknownProvider(String),
    /// The instance's templates or secrets could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// No port could be allocated for the new instance.
    #[error(transparent)]
    Ports(#[from] NoFreePort),
    /// The provider refused or failed to create the instance (after retries).
    #[error("cannot create the instance: {0}")]
    Provision(String),
    /// The provider failed to remove an instance (after retries).
    #[error("cannot destroy {id}: {detail}")]
    Destroy {
        /// The instance.
        id: String,
        /// What the provider said.
        detail: String,
    },
    /// The new instance did not turn healthy, or did not stay healthy for `min_ready`.
    #[error("new instance {id} {why}")]
    NotHealthy {
        /// The new instance.
        id: String,
        /// What its health checks showed.
        why: String,
    },
    /// The action panicked: a bug in tend, reported on the action alone.
    #[error("internal error (a bug in tend): {0}")]
    Panicked(String),
    /// The rollout of the version it was to make failed meanwhile: nothing was made.
    #[error("not made: the rollout of version {0} failed meanwhile")]
    Halted(SpecHash),
}

impl ActionError {
    /// True when the failure says the new version does not work (its instance never turned
    /// healthy), rather than that a provider could not be reached.
    pub fn is_unhealthy(&self) -> bool {
        matches!(self, ActionError::NotHealthy { .. })
    }
}

/// How one action ended.
pub type Outcome = Result<Done, ActionError>;

/// Reads a secret by name at apply time.
pub type SecretSource = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The groups instances can be made from: the spec being applied, and earlier versions of
/// its groups by spec hash (a rollback, or healing a dead instance of a paused group at the
/// hash it had).
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    spec: Spec,
    /// The spec's hash of each of its groups, computed once.
    current: BTreeMap<String, SpecHash>,
    older: BTreeMap<(String, SpecHash), Template>,
}

impl Catalog {
    /// A catalog of `spec` alone.
    pub fn new(spec: Spec) -> Catalog {
        let current = spec
            .groups
            .iter()
            .map(|g| (g.name.clone(), SpecHash::of(g)))
            .collect();
        Catalog {
            spec,
            current,
            older: BTreeMap::new(),
        }
    }

    /// True when `hash` is the spec's own version of `group`.
    fn is_current(&self, group: &str, hash: &SpecHash) -> bool {
        self.current.get(group) == Some(hash)
    }

    /// Adds every group of an earlier spec, so instances can be made at its hashes again.
    pub fn remember(&mut self, earlier: &Spec) {
        for group in &earlier.groups {
            self.older
                .entry((group.name.clone(), SpecHash::of(group)))
                .or_insert_with(|| group.template());
        }
    }

    /// Adds one template of `group` under its hash.
    pub fn remember_template(&mut self, group: &str, hash: SpecHash, template: Template) {
        self.older
            .entry((group.to_owned(), hash))
            .or_insert(template);
    }

    /// The spec instances are made for.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The template of `group` at `hash`, when known.
    pub fn template(&self, group: &str, hash: &SpecHash) -> Option<Template> {
        match self.spec.group(group) {
            Some(g) if self.is_current(group, hash) => Some(g.template()),
            _ => self.older.get(&(group.to_owned(), hash.clone())).cloned(),
        }
    }

    /// True when instances of `group` at `hash` can be made again.
    pub fn knows(&self, group: &str, hash: &SpecHash) -> bool {
        self.is_current(group, hash) || self.older.contains_key(&(group.to_owned(), hash.clone()))
    }

    /// Hashes of `group` that can be made again, current one included.
    pub fn hashes(&self, group: &str) -> std::collections::BTreeSet<SpecHash> {
        let mut known: std::collections::BTreeSet<SpecHash> = self
            .older
            .keys()
            .filter(|(g, _)| g == group)
            .map(|(_, h)| h.clone())
            .collect();
        if let Some(h) = self.current.get(group) {
            known.insert(h.clone());
        }
        known
    }

    /// The hash of what [`Catalog::group`] gives for the same arguments, without hashing
    /// the group again.
    pub fn hash_of(&self, name: &str, hash: Option<&SpecHash>) -> SpecHash {
        match (hash, self.current.get(name)) {
            (Some(h), _) if self.knows(name, h) => h.clone(),
            (_, Some(current)) => current.clone(),
            (_, None) => self
                .spec
                .group(name)
                .map(SpecHash::of)
                .unwrap_or_else(|| SpecHash::from_tag("")),
        }
    }

    /// `group` as it makes instances at `hash` (the spec's own version when `hash` is
    /// `None`, the spec's hash, or unknown).
    pub fn group(&self, name: &str, hash: Option<&SpecHash>) -> Option<Group> {
        let current = self.spec.group(name)?;
        match hash {
            Some(h) if !self.is_current(name, h) => {
                match self.older.get(&(name.to_owned(), h.clone())) {
                    Some(template) => Some(current.with_template(template)),
                    None => Some(current.clone()),
                }
            }
            _ => Some(current.clone()),
        }
    }
}

/// Everything an action needs while it runs.
pub struct Context {
    /// Groups and their earlier versions.
    pub catalog: Catalog,
    /// The providers.
    pub providers: crate::provider::ProviderSet,
    /// Attempts and timeouts.
    pub options: ExecOptions,
    /// Secrets, read when an instance is rendered.
    pub secret: SecretSource,
    /// Versions whose rollout failed, shared with the reconciler that records them: an
    /// action planned before such a failure stops before it asks the provider to make that
    /// version again.
    pub halted: Halted,
    /// How many rollout failures the reconciler had seen when this context was made.
    pub generation: u64,
    /// Where new instances get their ports.
    pub ports: SharedPorts,
    /// The balancers in front of groups: a new instance joins its group's rotation when it
    /// is healthy, and one leaving is drained first.
    pub balancers: crate::balancer::Balancers,
    /// Slots whose heals make new instances rather than start the dead one again in place,
    /// shared with the reconciler (see [`Context::make_anew`]).
    pub anew: Anew,
    /// Permits for provider calls that make or remove instances: `parallelism` of them,
    /// shared by every action of the reconciler.
    pub calls: Arc<tokio::sync::Semaphore>,
    /// Where the actions say how they go (a new instance waiting on its health checks).
    pub events: crate::reconcile::EventSink,
}

/// Slots, by (group, slot), whose instance started in place did not hold: their heals make
/// new instances until one of the slot holds. Shared by running actions and the reconciler.
pub type Anew = Arc<std::sync::Mutex<std::collections::BTreeSet<(String, String)>>>;

/// Versions whose rollout failed, by (group, hash), with the generation at which they
/// failed and whether the group rolled back; shared by running actions and the reconciler
/// that records the failures.
pub type Halted = Arc<std::sync::Mutex<BTreeMap<(String, SpecHash), (u64, bool)>>>;

impl Context {
    /// Runs `call` (a provider call that makes or removes an instance) once a permit is
    /// free, so at most `parallelism` run at once.
    pub async fn limited<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let _permit = self.calls.acquire().await;
        call.await
    }

    /// The version `action`, planned with this context, must not make: the rollout of
    /// that version failed after it was planned. Healing a dead instance at its own
    /// version goes on in a paused group, never in one that rolled back.
    pub fn halted(&self, action: &crate::plan::Action) -> Option<SpecHash> {
        let hash = action.hash.as_ref()?;
        let own = action.action == crate::plan::ActionKind::Heal
            && action.from_hash.as_ref() == Some(hash);
        let (since, rolled_back) = self
            .halted
            .lock()
            .ok()?
            .get(&(action.group.clone(), hash.clone()))
            .copied()?;
        (since > self.generation && (rolled_back || !own)).then(|| hash.clone())
    }

    /// Marks `action`'s slot as one whose heals make new instances: its instance, started
    /// again in place, did not come back healthy or died again before it held. A dead
    /// instance is started in place once; when that does not hold, it keeps failing in
    /// place, and a new instance is the better bet. The reconciler forgets the mark once
    /// an instance of the slot holds.
    pub fn make_anew(&self, action: &crate::plan::Action) {
        if let Ok(mut anew) = self.anew.lock() {
            anew.insert((action.group.clone(), action.slot.to_string()));
        }
    }

    /// True when `action`'s slot is marked by [`Context::make_anew`].
    pub fn makes_anew(&self, action: &crate::plan::Action) -> bool {
        self.anew
            .lock()
            .map(|anew| anew.contains(&(action.group.clone(), action.slot.to_string())))
            .unwrap_or(true)
    }
}

/// A provider error and its sources on one line.
pub(crate) fn chain(e: &ProviderError) -> String {
    crate::provider::error_chain(e)
}

//! The one rollout engine: `tend apply`, `tend destroy` and `tend run` all keep a project
//! with a [`Reconciler`], so every promise holds in each of them.
//!
//! A round is four small steps: **observe** (describe every provider that may hold the
//! project's instances, judge health with each instance's own checks, count work done but
//! not yet visible), **plan** (the one planner, with the actions in flight and the paused
//! groups), **start** (the startable actions, as long as their slot is not backing off; provider
//! calls are limited by the parallelism), and **record** (phases per group, converged or not). Between rounds,
//! [`Reconciler::wait`] returns when something changed: an action finished, a health check
//! crossed its threshold or passed, a backoff ran out, a new instance became visible. In a
//! project of 500 instances or more such rounds are spaced by twice the time the last one
//! took, so it spends most of its time acting, not looking.
//!
//! Actions run as tasks beside the loop: a rollout waiting on health never delays the heal
//! of another slot or group. A failed batch pauses its group (or rolls it back) in both
//! commands; the failure is recorded in the store, so it holds across restarts until a new
//! spec is applied. A panic in an action fails that action alone.

mod backoff;
mod deaths;
mod events;
mod monitor;
mod phase;
mod preview;
mod rollouts;
mod running;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Clock;
use crate::exec::{Catalog, Context, ExecOptions, SecretSource};
use crate::graph::GroupGraph;
use crate::plan::{plan, Action, ActionKind, Expectation, Expected, Hold, Paused, Plan, PlanInput};
use crate::provider::{observe, InstanceState, Observed, ProviderError, ProviderSet};
use crate::spec::{Spec, SpecHash, UpdatePolicy};
use crate::store::{FailedRollout, Store, StoreError};

pub use backoff::{delay, Backoff, Failure, BREAKER, CAP, FIRST};
pub use events::{ignore, Event, EventSink};
pub use monitor::{Monitor, Verdict};
pub use phase::GroupPhase;
pub use preview::{preview, Preview, PreviewError};

use running::{Finished, Running};

/// How long work done is trusted before the provider must show it.
pub const EXPECT_FOR: Duration = Duration::from_secs(30);
/// How long a new instance must live before its slot's failures are forgotten; one that
/// dies sooner counts as a failure of its slot.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How many applied versions back the engine keeps templates, to probe old instances with
/// their own checks and to heal them at their own hash.
const REMEMBERED_VERSIONS: usize = 10;

/// Instances judged unhealthy this close together are judged in one round: failures of
/// something they share read as one (the group degrades), not as instances to replace one
/// after another.
const UNHEALTHY_TOGETHER: Duration = Duration::from_millis(50);

/// Actions running at once. Provider calls are limited by `parallelism`; this bounds the
/// health gates waited on beside them (and the memory they take).
const ACTIONS_IN_FLIGHT: usize = 4096;

/// How many times its own duration passes between a round and the next one that can wait.
const ROUND_SPACING: u32 = 2;

/// Rounds are spaced from this many instances on: below it a round costs little, and the
/// next one starts as soon as there is a reason.
const SPACED_FROM: usize = 500;

/// What a failed action does to its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `tend apply`: a slot that fails is not tried again in this run; the run ends when
    /// nothing more can be done.
    Apply,
    /// `tend run`: a slot that fails backs off and is tried again, forever.
    Run,
}

/// How the reconciler works.
#[derive(Clone, Debug)]
pub struct Options {
    /// Parallelism, attempts and timeouts of actions.
    pub exec: ExecOptions,
    /// Apply or run.
    pub mode: Mode,
    /// The balancers in front of exposed groups (`tend run` serves them; empty otherwise).
    pub balancers: crate::balancer::Balancers,
    /// The fewest instances a look must hold for a death to be healed from it, without a
    /// new look ([`QUICK_HEALS_FROM`] unless a test wants every death healed so).
    pub quick_heals_from: usize,
}

/// From how many instances on a death is healed from the last look: below that, a full
/// round costs little.
pub const QUICK_HEALS_FROM: usize = 500;

/// Why the reconciler cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The spec names a provider this build lacks, or settings it refuses.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The spec's groups form a cycle (checked when it was evaluated; kept for safety).
    #[error("{0}")]
    Graph(String),
}

/// Why [`Reconciler::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// An action finished.
    Finished,
    /// A health verdict changed.
    Health,
    /// A backoff ran out, or work done became due to show.
    Timer,
}

/// Marks dead the instances of `observed` a provider told are gone: provider events are
/// trusted over listings that lag.
fn mark_gone(gone: &BTreeMap<String, Instant>, observed: &mut Observed) {
    for instance in observed.iter_mut() {
        if gone.contains_key(&instance.id) {
            instance.state = InstanceState::Dead;
        }
    }
}

/// What every provider said at the start of a round (see [`Reconciler::look`]).
pub struct Look {
    /// When the look began.
    began: Instant,
    /// The instances, or why a provider that must answer did not.
    observed: Result<Observed, crate::provider::ProviderError>,
}

/// One round's result.
#[derive(Clone, Debug)]
pub struct Round {
    /// The spec serial kept.
    pub serial: u64,
    /// What was observed, with health judged into each instance's state.
    pub observed: Observed,
    /// The plan made from it (actions in flight included).
    pub plan: Plan,
    /// Where each group stands.
    pub groups: BTreeMap<String, GroupPhase>,
    /// Instances that serve: running and judged healthy by their checks, or without any.
    pub serving: BTreeSet<String>,
    /// True when every slot is live, healthy and at its group's hash, and nothing runs.
    pub converged: bool,
    /// True when nothing runs or can start, and no health verdict is pending: what is left
    /// waits for a person (a paused group), a backoff, or a provider.
    pub idle: bool,
}

/// An instance tend made, until it holds: one that dies sooner is a failure of its slot.
struct Fresh {
    group: String,
    slot: String,
    hash: SpecHash,
    made: Instant,
    stable_after: Duration,
    /// Started again in place rather than made: dying before it holds marks its slot for
    /// new instances.
    in_place: bool,
}

/// How long a version whose new instance died soon after start is not trusted to serve.
const CRASH_MEMORY: Duration = Duration::from_secs(300);

/// Work done that the providers may not show yet.
struct Pending {
    expectation: Expectation,
    instance: String,
    until: Instant,
}

/// Keeps one project at its spec.
pub struct Reconciler {
    spec: Spec,
    serial: u64,
    /// Specs whose providers may still hold instances of the project; the first orders
    /// destroys of removed groups.
    previous: Vec<Spec>,
    /// Earlier versions whose templates are kept (history and `previous`).
    remembered: Vec<Spec>,
    store: Store,
    providers: ProviderSet,
    secret: SecretSource,
    clock: Clock,
    options: Options,
    events: EventSink,
    failed: BTreeMap<String, FailedRollout>,
    kept: Spec,
    paused: BTreeMap<String, Paused>,
    context: Arc<Context>,
    halted: crate::exec::Halted,
    /// Counts rollout failures: actions planned before one are checked against it.
    generation: u64,
    running: Running,
    queue: Vec<Action>,
    pending: Vec<Pending>,
    backoff: Backoff,
    given_up: BTreeSet<(String, String)>,
    monitor: Monitor,
    gone: BTreeMap<String, Instant>,
    fresh: BTreeMap<String, Fresh>,
    /// Instances tend set out to remove, and when: their exit is no news.
    removing: BTreeMap<String, Instant>,
    unobserved: BTreeMap<String, String>,
    held: BTreeMap<String, Hold>,
    /// Versions seen on instances and looked up in the store's history already.
    looked_up: BTreeSet<(String, SpecHash)>,
    /// Versions found that way.
    learned: Vec<(String, crate::store::Version)>,
    /// Per group, how many instances of each version served stably at the last look.
    serving: BTreeMap<String, BTreeMap<SpecHash, usize>>,
    /// Per group, the versions that served at all at the last look.
    serving_now: BTreeMap<String, BTreeSet<SpecHash>>,
    /// The instances that serve, as `count_serving` found them this round.
    serving_ids: BTreeSet<String>,
    /// Versions whose new instances died soon after start lately, by (group, hash).
    crashing: BTreeMap<(String, SpecHash), Instant>,
    /// Dead instances already counted as killed by their memory limit.
    out_of_memory: BTreeSet<String>,
    stopping: bool,
    ports: crate::exec::SharedPorts,
    /// Slots whose heals make new instances: their instance started in place did not hold.
    anew: crate::exec::Anew,
    /// Dead instances whose death, told by their provider, was counted before a full look
    /// (see `count_told_deaths`): a look that finds them killed for their memory does not
    /// count them again.
    told_deaths: BTreeSet<String>,
    /// Permits for provider calls, `parallelism` of them, kept across spec changes.
    calls: Arc<tokio::sync::Semaphore>,
    /// When the last round ended, and how long it took.
    round_done: Instant,
    round_took: Duration,
    /// The last full look, judged (`tend run` only): deaths are healed from it.
    last_look: Option<deaths::LookByGroup>,
    /// Instances finished actions removed since the last look.
    removed_since: BTreeSet<String>,
    /// Instances providers said are gone since the last round or heal of deaths.
    dead_since: BTreeSet<String>,
}

impl Reconciler {
    /// A reconciler keeping `spec` (applied as `serial`). `previous` are specs whose
    /// providers may still hold instances of the project (the spec applied before this
    /// one); the first orders destroys of removed groups. When empty, the store's history
    /// says what was applied before `serial`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: Spec,
        serial: u64,
        previous: Vec<Spec>,
        store: Store,
        providers: ProviderSet,
        secret: SecretSource,
        clock: Clock,
        options: Options,
        events: EventSink,
    ) -> Result<Reconciler, ReconcileError> {
        let calls = Arc::new(tokio::sync::Semaphore::new(options.exec.parallelism.max(1)));
        let mut r = Reconciler {
            kept: spec.clone(),
            spec,
            serial,
            remembered: previous.clone(),
            previous,
            store,
            context: Arc::new(Context {
                catalog: Catalog::default(),
                providers: providers.clone(),
                options: options.exec.clone(),
                secret: secret.clone(),
                halted: Default::default(),
                generation: 0,
                ports: Default::default(),
                balancers: Default::default(),
                anew: Default::default(),
                calls: calls.clone(),
                events: events.clone(),
            }),
            calls,
            round_done: clock.now(),
            round_took: Duration::ZERO,
            last_look: None,
            removed_since: BTreeSet::new(),
            dead_since: BTreeSet::new(),
            halted: Default::default(),
            generation: 0,
            providers,
            secret,
            clock,
            options,
            events,
            failed: BTreeMap::new(),
            paused: BTreeMap::new(),
            running: Running::default(),
            queue: Vec::new(),
            pending: Vec::new(),
            backoff: Backoff::default(),
            given_up: BTreeSet::new(),
            monitor: Monitor::default(),
            gone: BTreeMap::new(),
            fresh: BTreeMap::new(),
            removing: BTreeMap::new(),
            unobserved: BTreeMap::new(),
            held: BTreeMap::new(),
            looked_up: BTreeSet::new(),
            learned: Vec::new(),
            serving: BTreeMap::new(),
            serving_now: BTreeMap::new(),
            serving_ids: BTreeSet::new(),
            crashing: BTreeMap::new(),
            out_of_memory: BTreeSet::new(),
            stopping: false,
            ports: Arc::new(std::sync::Mutex::new(crate::exec::PortAllocator::new(
                Default::default(),
            ))),
            anew: Default::default(),
            told_deaths: BTreeSet::new(),
        };
        r.remember_history();
        if r.previous.is_empty() {
            r.previous = r.remembered.iter().take(1).cloned().collect();
        }
        r.failed = rollouts::still_holding(&r.spec, r.store.failed_rollouts()?);
        r.rebuild();
        Ok(r)
    }

    /// Keeps `spec` from now on, applied as `serial`. Failed rollouts of groups whose spec
    /// changed are forgotten: a changed group is tried again. Running actions finish as
    /// they are.
    pub fn set_spec(&mut self, spec: Spec, serial: u64) -> Result<(), ReconcileError> {
        let before_hashes: BTreeMap<String, SpecHash> = self
            .spec
            .groups
            .iter()
            .map(|g| (g.name.clone(), SpecHash::of(g)))
            .collect();
        let before = std::mem::replace(&mut self.spec, spec);
        self.remembered.insert(0, before.clone());
        self.remembered.truncate(REMEMBERED_VERSIONS);
        self.previous = vec![before];
        self.serial = serial;
        self.remember_history();
        // The store is the truth; what no longer holds for the new spec is forgotten.
        self.failed = rollouts::still_holding(&self.spec, self.store.failed_rollouts()?);
        self.store.save_failed_rollouts(&self.failed)?;
        self.given_up.clear();
        // Failures of a version say nothing of the next one: a group whose spec changed
        // starts with a clean slate.
        for group in &self.spec.groups {
            let changed = before_hashes
                .get(&group.name)
                .is_none_or(|h| *h != SpecHash::of(group));
            if changed {
                self.backoff.forget_group(&group.name);
            }
        }
        self.rebuild();
        Ok(())
    }

    /// The spec kept, and its serial.
    pub fn spec(&self) -> (&Spec, u64) {
        (&self.spec, self.serial)
    }

    /// Failed rollouts that hold now, by group.
    pub fn failed_rollouts(&self) -> &BTreeMap<String, FailedRollout> {
        &self.failed
    }

    /// Slots waiting out a backoff, with when and why, by group.
    pub fn backoffs(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let now = self.clock.now();
        self.spec
            .groups
            .iter()
            .map(|g| (g.name.clone(), self.backoff.describe(&g.name, now)))
            .filter(|(_, b)| !b.is_empty())
            .collect()
    }

    /// The last probe error of instance `id`, while it fails its checks.
    pub fn health_error(&self, id: &str) -> Option<String> {
        self.monitor.last_error(id).map(str::to_owned)
    }

    /// True when tend itself set out to remove instance `id` (lately): its exit is expected.
    pub fn removing(&self, id: &str) -> bool {
        self.removing.contains_key(id)
    }

    /// A provider event said instance `id` is gone: it counts as dead even while a lagging
    /// listing still shows it running.
    pub fn instance_gone(&mut self, id: String) {
        self.dead_since.insert(id.clone());
        self.gone.insert(id, self.clock.now());
    }

    /// Stops starting actions; running ones finish. See [`Reconciler::drain`].
    pub fn stop_starting(&mut self) {
        self.stopping = true;
        self.queue.clear();
    }

    /// Waits for every running action to finish.
    pub async fn drain(&mut self) {
        while let Some(finished) = self.running.next().await {
            self.finish(finished);
        }
    }

    /// True when actions are running.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Reads older applied versions from the store's history, so their templates are known.
    fn remember_history(&mut self) {
        let serials = self.store.history();
        let mut known: BTreeSet<String> = self.remembered.iter().map(Spec::fingerprint).collect();
        known.insert(self.spec.fingerprint());
        for serial in serials
            .into_iter()
            .rev()
            .filter(|s| *s < self.serial)
            .take(REMEMBERED_VERSIONS)
        {
            if self.remembered.len() >= REMEMBERED_VERSIONS {
                break;
            }
            if let Ok(Some(applied)) = self.store.applied(serial) {
                if known.insert(applied.spec.fingerprint()) {
                    self.remembered.push(applied.spec);
                }
            }
        }
    }

    /// Recomputes the kept spec, the paused groups and the catalog after a change.
    fn rebuild(&mut self) {
        self.kept = rollouts::effective(&self.spec, &self.failed);
        let mut catalog = rollouts::catalog(&self.kept, &self.spec, &self.remembered, &self.failed);
        for (group, version) in &self.learned {
            catalog.remember_template(group, version.hash.clone(), version.template.clone());
        }
        self.paused = rollouts::paused(&self.spec, &self.kept, &self.failed, &catalog);
        if let Ok(mut halted) = self.halted.lock() {
            let now: BTreeMap<(String, SpecHash), bool> = self
                .failed
                .iter()
                .flat_map(|(group, f)| {
                    let rolled_back = f.paused_because().is_none();
                    let rollback = f
                        .rolled_back_to()
                        .filter(|_| f.rollback_failed.is_some())
                        .map(|v| ((group.clone(), v.hash.clone()), false));
                    std::iter::once(((group.clone(), f.hash.clone()), rolled_back)).chain(rollback)
                })
                .collect();
            halted.retain(|key, _| now.contains_key(key));
            for (key, rolled_back) in now {
                let generation = self.generation;
                halted
                    .entry(key)
                    .and_modify(|e| e.1 = rolled_back)
                    .or_insert((generation, rolled_back));
            }
        }
        self.context = Arc::new(Context {
            catalog,
            providers: self.providers.clone(),
            options: self.options.exec.clone(),
            secret: self.secret.clone(),
            halted: self.halted.clone(),
            generation: self.generation,
            ports: self.ports.clone(),
            balancers: self.options.balancers.clone(),
            anew: self.anew.clone(),
            calls: self.calls.clone(),
            events: self.events.clone(),
        });
    }

    /// One round: look, then [`Reconciler::round_after`] the look.
    pub async fn round(&mut self) -> Result<Round, ReconcileError> {
        let look = self.look().await;
        self.round_after(look)
    }

    /// Step one's look at every provider. It borrows nothing of the reconciler, so what
    /// providers tell while it runs (a death, healed from the last look) is handled
    /// meanwhile; a look at many instances can take a while.
    pub fn look(&self) -> impl std::future::Future<Output = Look> + 'static {
        let began = self.clock.now();
        let (spec, previous, providers) = (
            self.kept.clone(),
            self.previous.clone(),
            self.providers.clone(),
        );
        async move {
            Look {
                began,
                observed: observe(&spec, &previous, &providers).await,
            }
        }
    }

    /// The rest of a round, from `look`: judge what it saw, plan, start, record.
    pub fn round_after(&mut self, look: Look) -> Result<Round, ReconcileError> {
        let began = look.began;
        self.dead_since.clear();
        let observed = self.observe(look)?;
        self.remember_look(&observed);
        self.count_serving(&observed);
        let plan = self.plan(&observed)?;
        self.start(&plan);
        let round = self.record(observed, plan);
        self.round_done = self.clock.now();
        self.round_took = if round.observed.len() >= SPACED_FROM {
            self.round_done.duration_since(began)
        } else {
            Duration::ZERO
        };
        Ok(round)
    }

    /// The earliest time the next round may start for a reason that can wait (an action
    /// finished, a health verdict, an instance expected to show): from 500 instances on,
    /// rounds are spaced by twice the time the last one took, so at any size at most a
    /// third of the time goes to looking and planning, and the rest to the actions.
    pub(crate) fn next_round_at(&self) -> Instant {
        self.round_done + self.round_took * ROUND_SPACING
    }

    /// Counts, per group and version, the instances that serve (running, judged by their
    /// checks), and those that serve stably: of a version whose new instances did not lately
    /// die soon after they started.
    fn count_serving(&mut self, observed: &Observed) {
        self.serving.clear();
        self.serving_now.clear();
        self.serving_ids.clear();
        // Whether a version has no checks, looked up once per group and version.
        let mut unchecked: BTreeMap<(&str, &str), bool> = BTreeMap::new();
        for (_, i) in observed.iter() {
            if i.state != InstanceState::Running {
                continue;
            }
            let hash = SpecHash::from_tag(&i.tags.hash);
            // Judged by its checks, or made from a version without any.
            let judged = self.monitor.follows(&i.id)
                || *unchecked
                    .entry((i.tags.group.as_str(), i.tags.hash.as_str()))
                    .or_insert_with(|| {
                        self.context
                            .catalog
                            .group(&i.tags.group, Some(&hash))
                            .is_some_and(|g| g.flavor.health.is_none())
                    });
            if !judged {
                continue;
            }
            self.serving_ids.insert(i.id.clone());
            self.serving_now
                .entry(i.tags.group.clone())
                .or_default()
                .insert(hash.clone());
            if !self
                .crashing
                .contains_key(&(i.tags.group.clone(), hash.clone()))
            {
                *self
                    .serving
                    .entry(i.tags.group.clone())
                    .or_default()
                    .entry(hash)
                    .or_default() += 1;
            }
        }
    }

    /// Step one: what runs, with health judged by each instance's own checks, provider
    /// events trusted over lagging listings, and deaths of new instances counted.
    fn observe(&mut self, look: Look) -> Result<Observed, ReconcileError> {
        let now = look.began;
        let mut observed = look.observed?;
        self.note_providers(&observed);
        self.learn_versions(&observed);
        if let Ok(mut ports) = self.ports.lock() {
            let range = self
                .options
                .exec
                .ports
                .or(self.spec.ports)
                .unwrap_or_default();
            ports.set_range(range);
            ports.note_in_use(&observed, &self.spec);
        }
        self.gone
            .retain(|_, at| now.duration_since(*at) < EXPECT_FOR);
        mark_gone(&self.gone, &mut observed);
        let busy: BTreeSet<(String, String)> = self
            .running
            .actions()
            .into_iter()
            .filter(|a| a.action != ActionKind::Destroy)
            .map(|a| (a.group, a.slot.to_string()))
            .collect();
        self.monitor.sync(
            &observed,
            &self.context.catalog,
            &self.secret,
            &busy,
            &self.providers,
        );
        self.monitor.judge(&mut observed);
        self.monitor.start_due(&self.providers, now);
        let seen: BTreeSet<&str> = observed.iter().map(|(_, i)| i.id.as_str()).collect();
        self.pending
            .retain(|p| now < p.until && !seen.contains(p.instance.as_str()));
        self.count_out_of_memory(&observed, now);
        self.count_quick_deaths(&observed, now);
        self.forget_anew(&observed, &busy);
        let live: BTreeSet<(String, String)> = observed
            .iter()
            .filter(|(_, i)| i.state.is_live())
            .map(|(_, i)| (i.tags.group.clone(), i.tags.slot.clone()))
            .collect();
        self.backoff
            .settle(now, |g, s| live.contains(&(g.to_owned(), s.to_owned())));
        Ok(observed)
    }

    /// Looks up, in the store's history, the versions of instances that the catalog does
    /// not know yet: each instance is probed with its own checks, and healed at its own
    /// version when its group is paused.
    fn learn_versions(&mut self, observed: &Observed) {
        let versions: BTreeSet<(&str, &str)> = observed
            .iter()
            .map(|(_, i)| (i.tags.group.as_str(), i.tags.hash.as_str()))
            .collect();
        let unknown: BTreeSet<(String, SpecHash)> = versions
            .into_iter()
            .map(|(g, h)| (g.to_owned(), SpecHash::from_tag(h)))
            .filter(|(g, h)| {
                !self.context.catalog.knows(g, h)
                    && !self.looked_up.contains(&(g.clone(), h.clone()))
            })
            .collect();
        if unknown.is_empty() {
            return;
        }
        self.looked_up.extend(unknown.iter().cloned());
        let found = rollouts::find_versions(&self.store, &unknown);
        if !found.is_empty() {
            self.learned.extend(found);
            self.rebuild();
        }
    }

    /// Tells when a provider that may hold instances stops answering, or answers again.
    fn note_providers(&mut self, observed: &Observed) {
        for (provider, error) in changes(&self.unobserved, &observed.unobserved) {
            (self.events)(Event::Provider {
                provider: provider.clone(),
                error: error.cloned(),
            });
        }
        self.unobserved = observed.unobserved.clone();
    }

    /// An instance killed for going over its memory limit is a crash of its slot, however
    /// long it ran: its next instance would go the same way.
    fn count_out_of_memory(&mut self, observed: &Observed, now: Instant) {
        let dead: Vec<&crate::provider::ObservedInstance> = observed
            .iter()
            .map(|(_, i)| i)
            .filter(|i| i.state == InstanceState::Dead && i.ended.as_deref() == Some("oom"))
            .collect();
        self.out_of_memory
            .retain(|id| dead.iter().any(|i| i.id == *id));
        self.told_deaths.retain(|id| {
            observed
                .iter()
                .any(|(_, i)| i.id == *id && i.state == InstanceState::Dead)
        });
        for i in dead {
            if !self.out_of_memory.insert(i.id.clone()) {
                continue;
            }
            if self.told_deaths.remove(&i.id) {
                // Counted already, when its provider told of its death.
                continue;
            }
            // `apply` heals what it finds dead; only its own new instances count against a
            // slot. Counted here, not again as a quick death.
            let made_here = self.fresh.remove(&i.id).is_some();
            if self.options.mode == Mode::Apply && !made_here {
                continue;
            }
            self.crashing.insert(
                (i.tags.group.clone(), SpecHash::from_tag(&i.tags.hash)),
                now,
            );
            let why = format!(
                "instance {} was killed for going over its memory limit (oom)",
                i.id
            );
            self.slot_failed(&i.tags.group, &i.tags.slot, Failure::QuickDeath, why);
        }
    }

    /// An instance tend made that died before it held is a failure of its slot.
    fn count_quick_deaths(&mut self, observed: &Observed, now: Instant) {
        let states: BTreeMap<&str, (&str, InstanceState)> = observed
            .iter()
            .map(|(p, i)| (i.id.as_str(), (p, i.state)))
            .collect();
        let mut died = Vec::new();
        self.fresh.retain(|id, fresh| {
            let age = now.duration_since(fresh.made);
            match states.get(id.as_str()) {
                Some((_, state)) if state.is_live() => age < fresh.stable_after,
                // Not listed yet is not dead: wait for the listing, up to the expectation.
                None if age < EXPECT_FOR && !observed.unobserved.is_empty() => true,
                None if age < Duration::from_millis(100) => true,
                _ => {
                    if age < fresh.stable_after {
                        died.push((
                            fresh.group.clone(),
                            fresh.slot.clone(),
                            fresh.hash.clone(),
                            id.clone(),
                            age,
                            fresh.in_place,
                        ));
                    }
                    false
                }
            }
        });
        self.crashing
            .retain(|_, at| now.duration_since(*at) < CRASH_MEMORY);
        self.quick_deaths(died, now);
    }

    /// Counts the deaths providers told of (`dead`) among the instances tend made, before
    /// a heal planned without a full look starts: a quick death there is a failure of its
    /// slot (it backs off when it keeps dying), and one of an instance started in place
    /// marks its slot for new instances, as a full look would have.
    pub(super) fn count_told_deaths(&mut self, dead: &BTreeSet<String>) {
        let now = self.clock.now();
        let mut died = Vec::new();
        for id in dead {
            let Some(fresh) = self.fresh.remove(id) else {
                continue;
            };
            self.told_deaths.insert(id.clone());
            let age = now.duration_since(fresh.made);
            if age < fresh.stable_after {
                died.push((
                    fresh.group,
                    fresh.slot,
                    fresh.hash,
                    id.clone(),
                    age,
                    fresh.in_place,
                ));
            }
        }
        self.quick_deaths(died, now);
    }

    /// Records deaths of instances tend made that died before they held: (group, slot,
    /// hash, id, age, started in place).
    #[allow(clippy::type_complexity)]
    fn quick_deaths(
        &mut self,
        died: Vec<(String, String, SpecHash, String, Duration, bool)>,
        now: Instant,
    ) {
        for (group, slot, hash, id, age, in_place) in died {
            if in_place {
                // Started in place and dead again before it held: it keeps failing in
                // place, so the slot's next heals make new instances.
                if let Ok(mut anew) = self.anew.lock() {
                    anew.insert((group.clone(), slot.clone()));
                }
            }
            self.crashing.insert((group.clone(), hash), now);
            let why = format!(
                "instance {id} died {:.1}s after it started",
                age.as_secs_f64()
            );
            self.slot_failed(&group, &slot, Failure::QuickDeath, why);
        }
    }

    /// A slot marked for new instances (its instance started in place did not hold) may
    /// start its dead instances in place again once an instance of it holds: runs, judged
    /// healthy (or without checks), past the time in which a death counts as a crash, with
    /// no action at work on its slot (`busy`).
    fn forget_anew(&mut self, observed: &Observed, busy: &BTreeSet<(String, String)>) {
        let Ok(mut anew) = self.anew.lock() else {
            return;
        };
        if anew.is_empty() {
            return;
        }
        for (_, i) in observed.iter() {
            let slot = (i.tags.group.clone(), i.tags.slot.clone());
            if i.state == InstanceState::Running
                && !self.fresh.contains_key(&i.id)
                && !busy.contains(&slot)
            {
                anew.remove(&slot);
            }
        }
    }

    /// Records a failure of a slot: a backoff (run), or no more attempts (apply).
    fn slot_failed(&mut self, group: &str, slot: &str, kind: Failure, why: String) {
        let now = self.clock.now();
        let wait = match self.options.mode {
            Mode::Run => Some(self.backoff.failed(group, slot, kind, &why, now)),
            Mode::Apply => {
                self.given_up.insert((group.to_owned(), slot.to_owned()));
                None
            }
        };
        (self.events)(Event::Backoff {
            group: group.to_owned(),
            slot: slot.to_owned(),
            wait,
            why,
        });
    }

    /// Step two: the one planner, with what runs and what was done.
    fn plan(&mut self, observed: &Observed) -> Result<Plan, ReconcileError> {
        let graph =
            GroupGraph::build(&self.kept).map_err(|e| ReconcileError::Graph(e.to_string()))?;
        let expectations: Vec<Expectation> =
            self.pending.iter().map(|p| p.expectation.clone()).collect();
        let in_flight = self.running.actions();
        let paused = self.paused_now();
        let planned = plan(PlanInput {
            expectations: &expectations,
            previous: self.previous.first(),
            in_flight: &in_flight,
            paused: &paused,
            ..PlanInput::new(&self.kept, &graph, observed)
        });
        for (group, hold) in changes(&self.held, &planned.held) {
            (self.events)(Event::Hold {
                group: group.clone(),
                hold: hold.cloned(),
            });
        }
        self.held = planned.held.clone();
        Ok(planned)
    }

    /// The paused groups, each made from the versions that serve stably now.
    fn paused_now(&self) -> BTreeMap<String, Paused> {
        let mut paused = self.paused.clone();
        for (group, p) in paused.iter_mut() {
            let mut versions: Vec<(&SpecHash, &usize)> = self
                .serving
                .get(group)
                .map(|c| c.iter().collect())
                .unwrap_or_default();
            versions.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            p.serving = versions
                .into_iter()
                .map(|(h, _)| h.clone())
                .filter(|h| self.context.catalog.knows(group, h))
                .collect();
        }
        paused
    }

    /// True when `action`'s slot may be tried now.
    fn may_try(&self, action: &Action, now: Instant) -> bool {
        let slot = action.slot.to_string();
        let key = (action.group.clone(), slot.clone());
        !self.given_up.contains(&key) && !self.backoff.waiting(&action.group, &slot, now)
    }

    /// Step three: queues the startable actions whose slot may be tried, and starts as
    /// many as the parallelism allows.
    fn start(&mut self, plan: &Plan) {
        if self.stopping {
            return;
        }
        let now = self.clock.now();
        self.queue = plan
            .startable()
            .filter(|a| self.may_try(a, now))
            .cloned()
            .collect();
        self.queue.reverse();
        self.start_queued();
    }

    fn start_queued(&mut self) {
        while self.running.len() < ACTIONS_IN_FLIGHT && !self.stopping {
            let Some(action) = self.queue.pop() else {
                break;
            };
            if action.action != ActionKind::Destroy {
                self.monitor
                    .pause_slot(&action.group, &action.slot.to_string());
            }
            // An instance tend removes itself does not die: it is not a failure of its slot.
            if let Some(old) = &action.instance {
                self.fresh.remove(old);
                let now = self.clock.now();
                self.removing
                    .retain(|_, at| now.duration_since(*at) < EXPECT_FOR);
                self.removing.insert(old.clone(), now);
            }
            (self.events)(Event::Started(action.clone()));
            self.running.start(self.context.clone(), action);
        }
    }

    /// Step four: where each group stands.
    fn record(&mut self, observed: Observed, plan: Plan) -> Round {
        let backoff = &self.backoff;
        let groups = phase::phases(
            &self.spec,
            &self.kept,
            &observed,
            &plan,
            &self.failed,
            &|g| backoff.failing(g),
        );
        let now = self.clock.now();
        let nothing_left = plan.actions.is_empty()
            && self.pending.is_empty()
            && self.running.is_empty()
            && observed.unobserved.is_empty();
        let converged = nothing_left && groups.values().all(|p| *p == GroupPhase::Converged);
        let startable = plan.startable().any(|a| self.may_try(a, now));
        let idle = self.running.is_empty()
            && self.queue.is_empty()
            && self.pending.is_empty()
            && !startable
            && !self.monitor.undecided();
        Round {
            serial: self.serial,
            serving: std::mem::take(&mut self.serving_ids),
            observed,
            plan,
            groups,
            converged,
            idle,
        }
    }

    /// Waits until something changed that a new round should see.
    pub async fn wait(&mut self) -> Wake {
        let mut wake: Option<(Wake, Instant)> = None;
        loop {
            let now = self.clock.now();
            let spaced = self.next_round_at();
            self.monitor.start_due(&self.providers, now);
            let mut timer = now + Duration::from_secs(3600);
            let mut timer_wakes = false;
            if let Some(t) = self.monitor.next_due() {
                timer = timer.min(t.max(now));
            }
            if let Some(t) = self.backoff.next_retry(now) {
                if t <= timer {
                    timer = t;
                    timer_wakes = true;
                }
            }
            let expected = (now + Duration::from_millis(100)).max(spaced);
            if !self.pending.is_empty() && expected <= timer {
                timer = expected;
                timer_wakes = true;
            }
            if let Some((_, at)) = wake {
                if at <= timer {
                    timer = at;
                }
            }
            tokio::select! {
                biased;
                finished = self.running.next(), if !self.running.is_empty() => {
                    if let Some(finished) = finished {
                        let replan = self.finish(finished);
                        self.start_queued();
                        if replan {
                            if now >= spaced {
                                return Wake::Finished;
                            }
                            wake.get_or_insert((Wake::Finished, spaced));
                        }
                    }
                }
                (id, result) = self.monitor.next_result() => {
                    match self.monitor.record(&id, result, &self.clock) {
                        Verdict::Same => {}
                        Verdict::Passing => {
                            let at = (now + Duration::from_millis(5)).max(spaced);
                            wake.get_or_insert((Wake::Health, at));
                        }
                        Verdict::Unhealthy(why) => {
                            self.tell_unhealthy(&id, why);
                            let at = (self.clock.now() + UNHEALTHY_TOGETHER).max(spaced);
                            wake.get_or_insert((Wake::Health, at));
                        }
                    }
                }
                _ = tokio::time::sleep_until(timer) => {
                    if let Some((reason, at)) = wake {
                        if self.clock.now() >= at {
                            return reason;
                        }
                    }
                    if timer_wakes {
                        return Wake::Timer;
                    }
                }
            }
        }
    }

    fn tell_unhealthy(&self, id: &str, why: String) {
        let (group, slot) = self.monitor.place(id).unwrap_or_default();
        (self.events)(Event::Unhealthy {
            group,
            slot,
            instance: id.to_owned(),
            why,
        });
    }

    /// Takes in a finished action; true when a new round should look now.
    fn finish(&mut self, finished: Finished) -> bool {
        let Finished {
            action,
            outcome,
            took,
            generation,
        } = finished;
        (self.events)(Event::Finished {
            action: action.clone(),
            outcome: outcome.clone(),
            elapsed: took,
        });
        let now = self.clock.now();
        let slot = action.slot.to_string();
        if outcome.is_err() {
            // A failed action may have left an instance no look has seen and no expectation
            // names (a new one that never turned healthy): deaths wait for a full look.
            self.last_look = None;
        }
        match &outcome {
            Ok(done) => {
                if let Some(old) = &action.instance {
                    self.removed_since.insert(old.clone());
                }
                if let Some(id) = &done.instance {
                    self.pending.push(Pending {
                        expectation: Expectation {
                            group: action.group.clone(),
                            slot: action.slot.clone(),
                            expected: Expected::Create {
                                hash: action
                                    .hash
                                    .clone()
                                    .unwrap_or_else(|| SpecHash::from_tag("")),
                            },
                        },
                        instance: id.clone(),
                        until: now + EXPECT_FOR,
                    });
                    let stable_after = match self.kept.group(&action.group).map(|g| &g.update) {
                        Some(UpdatePolicy::Rolling(r)) => r.min_ready.to_std().max(STABLE_AFTER),
                        _ => STABLE_AFTER,
                    };
                    self.fresh.insert(
                        id.clone(),
                        Fresh {
                            group: action.group.clone(),
                            slot: slot.clone(),
                            hash: action
                                .hash
                                .clone()
                                .unwrap_or_else(|| SpecHash::from_tag("")),
                            made: now,
                            stable_after,
                            in_place: done.in_place,
                        },
                    );
                    if done.in_place {
                        // The instance lives on: its exit is news again, and the provider
                        // event that said it was gone is history.
                        self.removing.remove(id);
                        self.gone.remove(id);
                    }
                    self.monitor.vouch(id);
                    self.backoff
                        .succeeded(&action.group, &slot, stable_after, now);
                }
                let quiet = matches!(action.action, ActionKind::Create | ActionKind::Destroy);
                !quiet || self.queue.is_empty()
            }
            // It stopped before making anything: the next round plans the slot again.
            Err(crate::exec::ActionError::Halted(_)) => true,
            // A sibling in a batch whose rollout already failed, planned before it did: its
            // failure is the rollout's, already recorded, not its slot's. The next round
            // plans the slot under the pause or the rollback.
            Err(error)
                if error.is_unhealthy()
                    && generation < self.generation
                    && self
                        .failed
                        .get(&action.group)
                        .is_some_and(|f| action.hash.as_ref() == Some(&f.hash)) =>
            {
                true
            }
            Err(error) => {
                let made = action
                    .hash
                    .clone()
                    .unwrap_or_else(|| SpecHash::from_tag(""));
                // What served before the failed action: where a rollback goes. The version
                // most of the group's stably serving instances had at the last look; with
                // none, there is nothing known to be good to go back to.
                let counts = self.serving.get(&action.group);
                let most = counts.and_then(|c| {
                    c.iter()
                        .filter(|(h, _)| **h != made)
                        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                        .map(|(h, _)| h.clone())
                });
                let serving = most.and_then(|h| {
                    let template = self.context.catalog.template(&action.group, &h)?;
                    Some(crate::store::Version { hash: h, template })
                });
                // Only a new version that does not work stops a rollout (a replace, or a
                // heal of an older instance at the new version); a provider that failed to
                // create or remove is retried like any other failure. A pause protects what
                // serves: when nothing of the group serves stably, there is nothing to
                // protect, and the new version is retried (with backoff) instead.
                let protects = self
                    .serving_now
                    .get(&action.group)
                    .is_some_and(|c| c.iter().any(|h| *h != made));
                let rollout = (action.changes_version() && error.is_unhealthy() && protects)
                    .then(|| {
                        rollouts::on_batch_failed(
                            &self.spec,
                            self.serial,
                            &self.failed,
                            &self.store,
                            &action.group,
                            &made,
                            serving,
                            &format!("{}/{}: {error}", action.group, action.slot),
                            self.clock.epoch_ms(),
                        )
                    })
                    .flatten();
                match rollout {
                    Some(failed) => self.rollout_failed(&action.group, failed),
                    None => {
                        self.slot_failed(&action.group, &slot, Failure::Action, error.to_string())
                    }
                }
                true
            }
        }
    }

    /// A batch failed: the group pauses or rolls back, and the store says so.
    fn rollout_failed(&mut self, group: &str, failed: FailedRollout) {
        let rollback = failed.rolled_back_to().is_some() && failed.rollback_failed.is_none();
        let reason = match &failed.rollback_failed {
            Some(again) => format!("the rollback failed too: {again}"),
            None => failed.reason.clone(),
        };
        self.failed.insert(group.to_owned(), failed);
        self.generation += 1;
        if let Err(e) = self.store.save_failed_rollouts(&self.failed) {
            (self.events)(Event::Backoff {
                group: group.to_owned(),
                slot: String::new(),
                wait: None,
                why: format!("cannot record the failed rollout in the store: {e}"),
            });
        }
        self.rebuild();
        (self.events)(Event::RolloutFailed {
            group: group.to_owned(),
            reason,
            rollback,
        });
    }
}

/// How a run of [`converge`] ended.
#[derive(Clone, Debug)]
pub enum Converged {
    /// The project matches the spec.
    Yes(Round),
    /// Nothing more can be done now: the round says what holds it back.
    Stuck(Round),
    /// A stop request came; running actions finished.
    Stopped,
    /// A provider that may hold the project's instances stopped answering: running actions
    /// finished, nothing more was started.
    Unobserved {
        /// The provider.
        provider: String,
        /// Its error.
        error: String,
    },
}

/// Runs rounds until the project converges or nothing more can be done (`tend apply`,
/// `tend destroy`). A stop request (`stop` turning true) starts nothing more and lets
/// running actions finish.
pub async fn converge(
    reconciler: &mut Reconciler,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Converged, ReconcileError> {
    loop {
        if *stop.borrow() {
            reconciler.stop_starting();
            reconciler.drain().await;
            return Ok(Converged::Stopped);
        }
        let round = reconciler.round().await?;
        if let Some((provider, error)) = round.observed.unobserved.iter().next() {
            let (provider, error) = (provider.clone(), error.clone());
            reconciler.stop_starting();
            reconciler.drain().await;
            return Ok(Converged::Unobserved { provider, error });
        }
        if round.converged {
            return Ok(Converged::Yes(round));
        }
        if round.idle {
            return Ok(Converged::Stuck(round));
        }
        tokio::select! {
            biased;
            _ = stopped(stop) => {}
            _ = reconciler.wait() => {}
        }
    }
}

/// Returns when `stop` changes; never when its sender is gone.
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The keys whose values differ between `before` and `after`: the new value, or `None` for
/// a key that is gone.
fn changes<'a, V: PartialEq>(
    before: &'a BTreeMap<String, V>,
    after: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = (&'a String, Option<&'a V>)> {
    let set = after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(*value))
        .map(|(key, value)| (key, Some(value)));
    let gone = before
        .keys()
        .filter(|key| !after.contains_key(*key))
        .map(|key| (key, None));
    set.chain(gone)
}

//! `tend run`: the reconciler of `tend apply`, kept going forever.
//!
//! The loop is small named steps: **adopt** a newer spec from the store, one reconciler
//! **round** (observe, plan, start), **record** it (report, status, metrics, events), then
//! **wait** for a reason to look again: an action finished, a health verdict changed, a
//! provider event (an instance exited), a new spec in the store, a changed spec file
//! (`--watch`), a backoff running out, or the resync. Progress is read from tags every
//! round, so a restarted controller resumes a rollout where the last one stopped; failed
//! rollouts are read from the store, so a paused group stays paused.

pub mod deadline;
pub mod http;
pub mod journal;
pub mod replicas;
pub mod report;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::exec::{ExecOptions, SecretSource};
use crate::plan::{ActionKind, Hold};
use crate::provider::{ProviderEvent, ProviderSet, Selector};
use crate::reconcile::{self, Event, Look, Mode, ReconcileError, Reconciler, Round};
use crate::spec::Spec;
use crate::status::Status;
use crate::store::{Store, StoreError};

use journal::Journal;
use report::Report;

/// How the controller runs.
pub struct Options {
    /// The longest the controller sleeps without looking.
    pub resync: Duration,
    /// Provider calls that make or remove instances at once.
    pub parallelism: usize,
    /// Where instance ports come from (`--ports`), when given.
    pub ports: Option<crate::spec::PortRange>,
    /// True to write the report to the store (`controller.json`, or etcd's `status`).
    pub report: bool,
    /// Where the HTTP endpoint listens, for the report.
    pub listen: Option<String>,
    /// With `--watch`: the spec's files and how to evaluate them again.
    pub reload: Option<Reload>,
    /// See [`reconcile::Options::quick_heals_from`].
    pub quick_heals_from: usize,
    /// The status and balancers an HTTP endpoint already serves, when it outlives this
    /// controller (a replica that leads, stands by, and may lead again); `None` makes new
    /// ones.
    pub endpoint: Option<http::Endpoint>,
}

/// Re-evaluating the spec when one of its files changes.
pub struct Reload {
    /// Told when one of the spec's files changed, by a file watcher the caller makes.
    pub changed: Arc<tokio::sync::Notify>,
    /// What keeps `changed` told (the file watcher); kept as long as the controller.
    pub watcher: Box<dyn std::any::Any + Send + Sync>,
    /// Evaluates the spec again; the error is a rendered diagnostic.
    pub evaluate: Box<dyn Fn() -> Result<Spec, String> + Send + Sync>,
}

/// How long a change settles before the spec is read again: an editor's save is several
/// file events.
const SETTLE: Duration = Duration::from_millis(100);

/// Waits until `changed` is told; forever without it.
async fn told(changed: Option<&tokio::sync::Notify>) {
    match changed {
        Some(changed) => changed.notified().await,
        None => std::future::pending().await,
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reconciler failed.
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

/// The controller of one project.
pub struct Controller {
    reconciler: Reconciler,
    balancers: crate::balancer::Balancers,
    store: Store,
    providers: ProviderSet,
    clock: Clock,
    options: Options,
    journal: Arc<Journal>,
    status: Arc<Mutex<Option<Arc<Status>>>>,
    report: Option<Report>,
    /// Set when a provider told, during a look, what needs a look of its own.
    look_again: bool,
    /// The last applied version, as last read from the store.
    applied: Option<crate::store::Applied>,
    /// The store's spec mark when it was read, and when: it is read again when the mark
    /// moves, or a resync after the last read (an etcd watch can miss a change).
    read_store: Option<(Option<u64>, Instant)>,
    /// Who leads and stands by (with an etcd store), and when that was read.
    replicas: Option<(crate::status::Replicas, Instant)>,
    /// Where providers' events go, once `run` started.
    events: Option<mpsc::Sender<(String, ProviderEvent)>>,
    /// The providers whose events are watched, by name.
    watched: std::collections::BTreeSet<String>,
}

/// What came of an event a provider told.
#[derive(Debug, PartialEq, Eq)]
enum Told {
    /// Nothing to do.
    Nothing,
    /// A death, healed from the last look.
    Healed,
    /// Something only a full look sees.
    NeedsLook,
}

impl Controller {
    /// A controller for `spec`, applied as `serial`, on `clock`. Events go to `journal`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: Spec,
        serial: u64,
        store: Store,
        providers: ProviderSet,
        secret: SecretSource,
        clock: Clock,
        journal: Arc<Journal>,
        options: Options,
    ) -> Result<Controller, ControllerError> {
        // A controller acts: it holds the local store's lock, or leads in etcd.
        journal.role(true);
        let (balancers, status) = match &options.endpoint {
            Some(e) => (e.balancers.clone(), e.status.clone()),
            None => Default::default(),
        };
        let sink_journal = journal.clone();
        let events: reconcile::EventSink = Arc::new(move |e| record_event(&sink_journal, e));
        let reconciler = Reconciler::new(
            spec,
            serial,
            Vec::new(),
            store.clone(),
            providers.clone(),
            secret,
            clock,
            reconcile::Options {
                exec: ExecOptions {
                    parallelism: options.parallelism.max(1),
                    ports: options.ports,
                    ..ExecOptions::default()
                },
                mode: Mode::Run,
                balancers: balancers.clone(),
                quick_heals_from: options.quick_heals_from,
            },
            events,
        )?;
        Ok(Controller {
            reconciler,
            balancers,
            store,
            providers,
            clock,
            journal,
            status,
            report: None,
            look_again: false,
            applied: None,
            read_store: None,
            replicas: None,
            events: None,
            watched: Default::default(),
            options,
        })
    }

    /// What the HTTP endpoint needs.
    pub fn endpoint(&self) -> http::Endpoint {
        http::Endpoint {
            journal: self.journal.clone(),
            status: self.status.clone(),
            balancers: self.balancers.clone(),
        }
    }

    /// Runs until `stop` turns true; then starts nothing more and lets running actions
    /// finish. Instances keep running when it returns.
    pub async fn run(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ControllerError> {
        let mut events = self.watch_providers();
        self.watch_new_providers().await;
        let (spec, serial) = self.reconciler.spec();
        let project = spec.project.clone();
        self.journal.event(
            "spec",
            "",
            "",
            format!("keeping project {project:?} at serial {serial}"),
        );
        loop {
            if *stop.borrow() {
                break;
            }
            self.adopt_stored_spec()?;
            self.serve_balancers();
            let started = self.clock.now();
            let look = self.reconciler.look();
            let look = self.while_looking(look, &mut events).await;
            let round = self.reconciler.round_after(look)?;
            self.balancers.sync(&round.observed, &round.serving);
            self.record(&round, started);
            // A spec may have named a provider this look made (a plugin).
            self.watch_new_providers().await;
            if std::mem::take(&mut self.look_again) {
                continue;
            }
            let resync_at = self.clock.now() + self.options.resync;
            if self.wait(&mut stop, &mut events, resync_at).await {
                break;
            }
        }
        self.journal.event(
            "spec",
            "",
            "",
            "stopping: no new actions start; running ones finish".to_owned(),
        );
        self.reconciler.stop_starting();
        self.reconciler.drain().await;
        self.balancers.shutdown();
        if self.options.report {
            report::clear(&self.store);
        }
        self.journal.event(
            "spec",
            "",
            "",
            "controller stopped; instances keep running".to_owned(),
        );
        Ok(())
    }

    /// Listens for the groups the spec exposes (and stops what it no longer exposes).
    fn serve_balancers(&mut self) {
        let spec = self.reconciler.spec().0.clone();
        for message in self.balancers.serve(&spec) {
            self.journal.event("balancer", "", "", message);
        }
    }

    /// The channel every provider's events arrive on.
    fn watch_providers(&mut self) -> mpsc::Receiver<(String, ProviderEvent)> {
        let (tx, rx) = mpsc::channel::<(String, ProviderEvent)>(1024);
        self.events = Some(tx);
        rx
    }

    /// Starts the event stream of every provider not watched yet.
    async fn watch_new_providers(&mut self) {
        let Some(tx) = self.events.clone() else {
            return;
        };
        let selector = Selector {
            project: self.reconciler.spec().0.project.clone(),
        };
        for (name, provider) in self.providers.all() {
            if !self.watched.insert(name.clone()) {
                continue;
            }
            match provider.watch(&selector).await {
                Ok(Some(mut stream)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while let Some(event) = stream.recv().await {
                            if tx.send((name.clone(), event)).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    self.journal
                        .event("provider", "", "", format!("{name}: cannot watch: {e}"))
                }
            }
        }
    }

    /// Step one: takes a spec committed to the store by `tend apply` (or `--watch`).
    fn adopt_stored_spec(&mut self) -> Result<(), ControllerError> {
        let mark = self.store.spec_mark();
        let now = self.clock.now();
        let fresh = self
            .read_store
            .is_some_and(|(m, at)| m == mark && now < at + self.options.resync);
        if fresh {
            return Ok(());
        }
        self.applied = self.store.last_applied()?;
        self.read_store = Some((mark, now));
        let Some(applied) = self.applied.clone() else {
            return Ok(());
        };
        if applied.serial > self.reconciler.spec().1 {
            let serial = applied.serial;
            self.reconciler.set_spec(applied.spec, serial)?;
            self.journal
                .event("spec", "", "", format!("adopted serial {serial}"));
        }
        Ok(())
    }

    /// Step three: the report, the status, the metrics.
    fn record(&mut self, round: &Round, started: Instant) {
        self.journal
            .reconciled(self.clock.now().duration_since(started), round.converged);
        self.journal.phases(&round.groups);
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (_, i) in round.observed.iter() {
            let state = format!("{:?}", i.state).to_lowercase();
            *counts.entry((i.tags.group.clone(), state)).or_default() += 1;
        }
        self.journal.instances(counts);

        let (spec, serial) = self.reconciler.spec();
        let reconciler = &self.reconciler;
        let mut status =
            crate::status::build(spec, &round.observed, self.applied.as_ref(), &|id| {
                reconciler.health_error(id)
            });
        status.replicas = self.replicas_now();
        let took = self.clock.now().duration_since(started).as_millis();
        status.observed_at_ms = Some(
            self.clock
                .epoch_ms()
                .saturating_sub(u64::try_from(took).unwrap_or(u64::MAX)),
        );
        let backoff = self.reconciler.backoffs();
        let balancers = self.balancers.status();
        let report = Report {
            pid: std::process::id(),
            host: Some(crate::store::etcd::host_name()),
            listen: self.options.listen.clone(),
            serial,
            converged: round.converged,
            groups: round.groups.clone(),
            backoff,
            unobserved: round.observed.unobserved.clone(),
            balancers: balancers
                .iter()
                .cloned()
                .map(|mut b| {
                    b.open.clear();
                    b
                })
                .collect(),
        };
        report.annotate(&mut status);
        status.balancers = balancers;
        if let Ok(mut shown) = self.status.lock() {
            *shown = Some(Arc::new(status));
        }
        if self.report.as_ref() != Some(&report) {
            if round.converged
                && !self
                    .report
                    .as_ref()
                    .is_some_and(|r| r.converged && r.serial == serial)
            {
                self.journal
                    .event("converged", "", "", format!("serial {serial} converged"));
            }
            if self.options.report {
                if let Err(e) = report.write(&self.store) {
                    self.journal
                        .event("store", "", "", format!("cannot write the report: {e}"));
                }
            }
            self.report = Some(report);
        }
    }

    /// With an etcd store: who leads and stands by, read at most every two seconds.
    fn replicas_now(&mut self) -> Option<crate::status::Replicas> {
        self.store.remote()?;
        let now = self.clock.now();
        let stale = self
            .replicas
            .as_ref()
            .is_none_or(|(_, at)| now >= *at + Duration::from_secs(2));
        if stale {
            if let Ok(Some(shown)) = replicas::shown(&self.store) {
                self.replicas = Some((shown, now));
            }
        }
        self.replicas.as_ref().map(|(r, _)| r.clone())
    }

    /// Step one, the look: what providers tell while it runs is handled meanwhile (a
    /// death is healed from the last look at once); what needs a look of its own makes
    /// the next round follow this one at once.
    async fn while_looking(
        &mut self,
        look: impl std::future::Future<Output = Look>,
        events: &mut mpsc::Receiver<(String, ProviderEvent)>,
    ) -> Look {
        tokio::pin!(look);
        loop {
            tokio::select! {
                biased;
                look = &mut look => return look,
                Some((provider, event)) = events.recv() => {
                    if self.on_event(&provider, event) == Told::NeedsLook {
                        self.look_again = true;
                    }
                }
            }
        }
    }

    /// The group and slot of instance `id`, as the last round saw it.
    fn place_of(&self, id: &str) -> Option<(String, String)> {
        let status = self.status.lock().ok()?.clone()?;
        status.groups.iter().find_map(|g| {
            g.instances
                .iter()
                .find(|i| i.id == id)
                .map(|i| (g.name.clone(), i.slot.clone()))
        })
    }

    /// Handles what provider `provider` told.
    fn on_event(&mut self, provider: &str, event: ProviderEvent) -> Told {
        match event {
            ProviderEvent::Gone { id, .. } if self.reconciler.removing(&id) => Told::Nothing,
            ProviderEvent::Gone { id, why } => {
                // A death the kernel caused for the instance's memory is seen by a full
                // look, which reports it and counts it against its slot.
                let plain = why.is_none();
                let why = match why.as_deref() {
                    Some("oom") => " (oom: killed for going over its memory limit)".to_owned(),
                    Some(other) => format!(" ({other})"),
                    None => String::new(),
                };
                let (group, slot) = self.place_of(&id).unwrap_or_default();
                self.journal.instance_event(
                    "exited",
                    &group,
                    &slot,
                    &id,
                    format!("{provider} instance {id} is gone{why}"),
                );
                self.reconciler.instance_gone(id);
                if plain && self.reconciler.heal_deaths() {
                    Told::Healed
                } else {
                    Told::NeedsLook
                }
            }
            ProviderEvent::Note { message } => {
                self.journal.event("note", "", "", message);
                Told::Nothing
            }
            ProviderEvent::Changed => Told::NeedsLook,
        }
    }

    /// Step four: waits for the next reason to look; true when a stop request arrived.
    async fn wait(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        events: &mut mpsc::Receiver<(String, ProviderEvent)>,
        resync_at: Instant,
    ) -> bool {
        let stored = self.store.spec_mark();
        // After a death healed from the last look, a full round follows, spaced like any.
        let mut look_at = resync_at;
        let changed = self.options.reload.as_ref().map(|r| r.changed.clone());
        loop {
            // The local store is looked at every 250 ms for a spec handed over by `apply`.
            let poll = (self.clock.now() + Duration::from_millis(250)).min(look_at);
            tokio::select! {
                biased;
                _ = reconcile::stopped(stop) => return true,
                // A closed channel (no provider watches) is no reason to look.
                Some((provider, event)) = events.recv() => {
                    match self.on_event(&provider, event) {
                        Told::Nothing => continue,
                        Told::Healed => {
                            look_at = look_at.min(self.reconciler.next_round_at());
                            continue;
                        }
                        Told::NeedsLook => return false,
                    }
                }
                _ = self.reconciler.wait() => return false,
                _ = told(changed.as_deref()) => {
                    tokio::time::sleep(SETTLE).await;
                    if self.reload() {
                        return false;
                    }
                }
                _ = tokio::time::sleep_until(poll) => {}
            }
            if self.clock.now() >= look_at || self.store.spec_mark() != stored {
                return false;
            }
        }
    }

    /// With `--watch`, after a file changed: evaluates the spec again, and commits it when
    /// it is valid and new.
    fn reload(&mut self) -> bool {
        let Some(reload) = &self.options.reload else {
            return false;
        };
        match (reload.evaluate)() {
            Ok(spec) if spec.fingerprint() != self.reconciler.spec().0.fingerprint() => {
                match self.store.commit(&spec) {
                    Ok(applied) => {
                        self.journal.event(
                            "spec",
                            "",
                            "",
                            format!("spec file changed: committed serial {}", applied.serial),
                        );
                        true
                    }
                    Err(e) => {
                        self.journal.event(
                            "spec",
                            "",
                            "",
                            format!("cannot commit the changed spec: {e}"),
                        );
                        false
                    }
                }
            }
            Ok(_) => false,
            Err(diagnostic) => {
                self.journal.event(
                    "spec",
                    "",
                    "",
                    format!(
                        "the changed spec is not valid; keeping the running one:\n{diagnostic}"
                    ),
                );
                false
            }
        }
    }
}

/// Why a heal was needed, as a metric label: `unhealthy`, or how its instance ended
/// (`oom`, `tainted`, `orphaned`), else `dead`.
fn heal_reason(action: &crate::plan::Action) -> &'static str {
    if action.unhealthy {
        return "unhealthy";
    }
    // How it ended, as its provider said: "orphaned: its Vagrant folder is gone".
    let ended = action
        .reason
        .strip_prefix("instance is dead (")
        .and_then(|r| r.strip_suffix(')'))
        .map(|r| r.split(':').next().unwrap_or(r));
    match ended {
        Some("oom") => "oom",
        Some("tainted") => "tainted",
        Some("orphaned") => "orphaned",
        _ => "dead",
    }
}

/// Turns what the reconciler says into journal events (and with them metrics and logs).
fn record_event(journal: &Journal, event: Event) {
    match event {
        Event::Started(action) => {
            let surge = if action.surge { " (surge)" } else { "" };
            journal.event(
                "started",
                &action.group,
                &action.slot.to_string(),
                format!("{}{surge}: {}", action.action.name(), action.reason),
            )
        }
        Event::WaitingOnHealth { action, instance } => journal.instance_event(
            "waiting",
            &action.group,
            &action.slot.to_string(),
            &instance,
            format!("{instance} made; waiting for it to pass its health checks"),
        ),
        Event::Finished {
            action,
            outcome,
            elapsed,
        } => {
            let slot = action.slot.to_string();
            match outcome {
                Ok(done) => {
                    let kind = match action.action {
                        ActionKind::Create => "created",
                        ActionKind::Heal => "healed",
                        ActionKind::Replace => "replaced",
                        ActionKind::Destroy => "destroyed",
                    };
                    let made = match done.instance.as_deref() {
                        Some(i) if done.in_place => format!("; {i} started again in place"),
                        Some(i) => format!(" as {i}"),
                        None => String::new(),
                    };
                    if action.action == ActionKind::Heal {
                        journal.healed_because(&action.group, heal_reason(&action));
                    }
                    journal.instance_event(
                        kind,
                        &action.group,
                        &slot,
                        done.instance.as_deref().unwrap_or_default(),
                        format!(
                            "{}{made} in {:.0} ms",
                            action.reason,
                            elapsed.as_secs_f64() * 1000.0
                        ),
                    );
                }
                Err(error) => journal.event("failed", &action.group, &slot, error.to_string()),
            }
        }
        Event::Unhealthy {
            group,
            slot,
            instance,
            why,
        } => journal.instance_event(
            "unhealthy",
            &group,
            &slot,
            &instance,
            format!("instance {instance} failed its health check: {why}"),
        ),
        Event::RolloutFailed {
            group,
            reason,
            rollback,
        } => {
            let (kind, what) = if rollback {
                (
                    "rolled_back",
                    "the rollout failed; rolling back to the previous version",
                )
            } else {
                (
                    "paused",
                    "the rollout failed; paused until a new spec is applied",
                )
            };
            journal.event(kind, &group, "", format!("{what}: {reason}"));
        }
        Event::Backoff {
            group,
            slot,
            wait,
            why,
        } => {
            let next = match wait {
                Some(w) if w.is_zero() => "; trying again now".to_owned(),
                Some(w) => format!("; next try in {}s", w.as_secs()),
                None => String::new(),
            };
            journal.event("backoff", &group, &slot, format!("{why}{next}"));
        }
        Event::Provider { provider, error } => match error {
            Some(e) => journal.event(
                "provider",
                "",
                "",
                format!("cannot observe {provider} ({e}); its groups wait, the others are kept"),
            ),
            None => journal.event(
                "provider",
                "",
                "",
                format!("{provider}: providers answer again"),
            ),
        },
        Event::Hold { group, hold } => match hold {
            // A pause is told when the rollout fails.
            Some(Hold::Paused { .. }) => {}
            Some(h) => journal.event(h.name(), &group, "", h.reason().to_owned()),
            None => journal.event(
                "resumed",
                &group,
                "",
                "nothing holds the group back".to_owned(),
            ),
        },
    }
}

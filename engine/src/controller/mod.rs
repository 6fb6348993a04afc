//! `tend run`: the reconcile loop. Observe, plan, apply, with the same planner and executor
//! as `plan` and `apply`, woken at once by provider events (an instance exiting), by health
//! checks crossing their threshold, by a new spec in the store, and by a periodic resync.
//!
//! A slot that keeps failing backs off (1 s doubling to 5 min); a group that keeps failing
//! retries at the cap. Progress is read from tags every round, so a restarted controller
//! resumes a rollout where the last one stopped.

pub mod backoff;
pub mod http;
pub mod journal;
pub mod monitor;
pub mod report;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::exec::{ExecEvent, ExecOptions, Executor, Outcome, SecretSource};
use crate::graph::GroupGraph;
use crate::plan::{plan, ActionKind, Expectation, Expected, PlanInput};
use crate::provider::{observe, InstanceState, Observed, ProviderEvent, ProviderSet, Selector};
use crate::spec::{Spec, UpdatePolicy};
use crate::store::Store;

use backoff::Backoff;
use journal::Journal;
use monitor::Monitor;
use report::{Phase, Report};

/// How the controller runs.
pub struct Options {
    /// The longest the controller sleeps without looking.
    pub resync: Duration,
    /// Actions in flight at once.
    pub parallelism: usize,
    /// The state folder (for `controller.json`).
    pub state_dir: PathBuf,
    /// With `--watch`: the spec's files and how to evaluate them again.
    pub reload: Option<Reload>,
}

/// Re-evaluating the spec when one of its files changes.
pub struct Reload {
    /// Files whose modification time is watched.
    pub files: Vec<PathBuf>,
    /// Evaluates the spec again; the error is a rendered diagnostic.
    pub evaluate: Box<dyn Fn() -> Result<Spec, String> + Send>,
}

/// An instance the executor made or removed, until the provider shows it (or stops
/// showing it): the planner counts it as done meanwhile.
struct Pending {
    expectation: Expectation,
    instance: String,
    until: Instant,
}

/// How long an expectation is trusted before the provider must show it.
const EXPECT_FOR: Duration = Duration::from_secs(30);
/// How long a new instance must live before its slot's failures are forgotten.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The controller of one project.
pub struct Controller {
    spec: Arc<Mutex<Spec>>,
    serial: u64,
    store: Store,
    providers: ProviderSet,
    secret: SecretSource,
    options: Options,
    journal: Arc<Journal>,
    report: Arc<Mutex<Option<Report>>>,
    backoff: Backoff,
    monitor: Monitor,
    pending: Vec<Pending>,
    /// When each slot last got a new instance, to count quick deaths as failures.
    started: BTreeMap<(String, String), Instant>,
    /// Instances a provider event reported gone, trusted over a listing that lags behind.
    gone: BTreeMap<String, Instant>,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn slot_key(group: &str, slot: &str) -> (String, String) {
    (group.to_owned(), slot.to_owned())
}

impl Controller {
    /// A controller for `spec` at store serial `serial`.
    pub fn new(
        spec: Spec,
        serial: u64,
        store: Store,
        providers: ProviderSet,
        secret: SecretSource,
        options: Options,
    ) -> Self {
        Controller {
            spec: Arc::new(Mutex::new(spec)),
            serial,
            store,
            providers,
            secret,
            options,
            journal: Arc::new(Journal::default()),
            report: Arc::new(Mutex::new(None)),
            backoff: Backoff::default(),
            monitor: Monitor::default(),
            pending: Vec::new(),
            started: BTreeMap::new(),
            gone: BTreeMap::new(),
        }
    }

    /// What the HTTP endpoint needs.
    pub fn endpoint(&self) -> http::Endpoint {
        http::Endpoint {
            journal: self.journal.clone(),
            spec: self.spec.clone(),
            report: self.report.clone(),
            providers: self.providers.clone(),
            store: self.store.clone(),
            secret: self.secret.clone(),
        }
    }

    fn spec(&self) -> Spec {
        self.spec
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Runs until `stop` turns true. Instances keep running when it returns.
    pub async fn run(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ControllerError> {
        let project = self.spec().project.clone();
        let selector = Selector {
            project: project.clone(),
        };
        let (events_tx, mut events) = mpsc::channel::<(String, ProviderEvent)>(1024);
        let used: Vec<String> = self
            .spec()
            .groups
            .iter()
            .map(|g| g.provider.kind.clone())
            .collect();
        for (name, provider) in self
            .providers
            .iter()
            .filter(|(n, _)| used.iter().any(|u| u == n))
        {
            match provider.watch(&selector).await {
                Ok(Some(mut rx)) => {
                    let tx = events_tx.clone();
                    let name = name.to_owned();
                    tokio::spawn(async move {
                        while let Some(event) = rx.recv().await {
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
        let mut file_times = self.file_times();
        let mut observe_failures = 0u32;
        self.journal.event(
            "spec",
            "",
            "",
            format!("keeping project {project:?} at serial {}", self.serial),
        );
        loop {
            if *stop.borrow() {
                break;
            }
            let round = Instant::now();
            self.adopt_stored_spec()?;
            let spec = self.spec();
            let mut observed = match observe(&spec, &self.providers).await {
                Ok(o) => {
                    if observe_failures > 0 {
                        self.journal
                            .event("provider", "", "", "providers answer again".to_owned());
                    }
                    observe_failures = 0;
                    o
                }
                Err(e) => {
                    observe_failures += 1;
                    let wait = backoff::delay(observe_failures).min(Duration::from_secs(30));
                    self.journal.event(
                        "provider",
                        "",
                        "",
                        format!("cannot observe ({e}); retrying in {}s", wait.as_secs()),
                    );
                    self.write_report(Phase::Failing);
                    if wait_or_stop(&mut stop, wait).await {
                        break;
                    }
                    continue;
                }
            };
            self.monitor.sync(&spec, &observed, &self.secret);
            mark_unhealthy(&mut observed, &self.monitor.unhealthy());
            self.gone.retain(|_, at| at.elapsed() < EXPECT_FOR);
            mark_gone(&mut observed, &self.gone);
            self.settle_pending(&observed);
            let live: HashSet<(String, String)> = observed
                .iter()
                .filter(|(_, i)| i.state.is_live())
                .map(|(_, i)| slot_key(&i.tags.group, &i.tags.slot))
                .collect();
            self.backoff
                .settle(Instant::now(), |g, s| live.contains(&slot_key(g, s)));
            self.count_instances(&observed);

            let converged = match self.reconcile(&spec, &observed, &mut stop).await {
                Some(converged) => converged,
                None => break,
            };
            self.journal.reconciled(round.elapsed(), converged);
            let phase = if spec
                .groups
                .iter()
                .any(|g| self.backoff.failing(&g.name).is_some())
            {
                Phase::Failing
            } else if converged {
                Phase::Converged
            } else {
                Phase::Working
            };
            self.write_report(phase);
            // Right after acting, look again at once; otherwise wait for a reason to.
            let waiting =
                !self.pending.is_empty() || self.backoff.next_retry(Instant::now()).is_some();
            if converged || waiting {
                continue_or_wait(&mut self, &mut stop, &mut events, &mut file_times).await;
            }
        }
        report::clear(&self.options.state_dir);
        self.journal.event(
            "spec",
            "",
            "",
            "controller stopped; instances keep running".to_owned(),
        );
        Ok(())
    }

    /// One plan and its execution. `Some(true)` when nothing needed doing, `None` when a
    /// stop request arrived (after running actions finished).
    async fn reconcile(
        &mut self,
        spec: &Spec,
        observed: &Observed,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<bool> {
        let Ok(graph) = GroupGraph::build(spec) else {
            return Some(false);
        };
        let expectations: Vec<Expectation> =
            self.pending.iter().map(|p| p.expectation.clone()).collect();
        let mut planned = plan(PlanInput {
            spec,
            graph: &graph,
            observed,
            expectations: &expectations,
            previous: None,
        });
        let now = Instant::now();
        // A slot whose new instance died before it held counts as failing.
        for action in planned
            .actions
            .iter()
            .filter(|a| a.action == ActionKind::Heal)
        {
            let key = slot_key(&action.group, &action.slot.to_string());
            if let Some(started) = self.started.remove(&key) {
                if now.duration_since(started) < STABLE_AFTER
                    && !self.backoff.waiting(&key.0, &key.1, now)
                {
                    let why = format!(
                        "{} {:.1}s after it started",
                        action.reason,
                        now.duration_since(started).as_secs_f64()
                    );
                    let wait = self.backoff.failed(&key.0, &key.1, &why, now);
                    self.journal.event(
                        "backoff",
                        &key.0,
                        &key.1,
                        format!("{why}; next try in {}s", wait.as_secs()),
                    );
                }
            }
        }
        let backoff = &self.backoff;
        planned.retain(|a| {
            a.action == ActionKind::Destroy || !backoff.waiting(&a.group, &a.slot.to_string(), now)
        });
        if planned.is_empty() {
            return Some(self.backoff.next_retry(now).is_none() && self.pending.is_empty());
        }
        let options = ExecOptions {
            parallelism: self.options.parallelism,
            ..ExecOptions::default()
        };
        let executor = Executor::new(
            spec.clone(),
            self.providers.clone(),
            options,
            self.secret.clone(),
        );
        let stop_flag = executor.stop_flag();
        let journal = self.journal.clone();
        let mut on_event = |action: &crate::plan::Action, event: ExecEvent| {
            if let ExecEvent::Finished {
                outcome, elapsed, ..
            } = event
            {
                match &outcome {
                    Outcome::Done { instance, .. } => {
                        let kind = match action.action {
                            ActionKind::Create => "created",
                            ActionKind::Heal => "healed",
                            ActionKind::Replace => "replaced",
                            ActionKind::Destroy => "destroyed",
                        };
                        let made = instance
                            .as_deref()
                            .map(|i| format!(" as {i}"))
                            .unwrap_or_default();
                        journal.event(
                            kind,
                            &action.group,
                            &action.slot.to_string(),
                            format!(
                                "{}{made} in {:.0} ms",
                                action.reason,
                                elapsed.as_secs_f64() * 1000.0
                            ),
                        );
                    }
                    Outcome::Failed { error } => journal.event(
                        "failed",
                        &action.group,
                        &action.slot.to_string(),
                        error.clone(),
                    ),
                    Outcome::Skipped { .. } => {}
                }
            }
        };
        let run = executor.run(&planned, &mut on_event);
        tokio::pin!(run);
        let mut stopping = false;
        let report = tokio::select! {
            report = &mut run => report,
            _ = stop.changed() => {
                stop_flag.store(true, Ordering::SeqCst);
                stopping = true;
                run.await
            }
        };
        let now = Instant::now();
        for (action, outcome) in planned.actions.iter().zip(&report.outcomes) {
            let slot = action.slot.to_string();
            match outcome {
                Outcome::Done {
                    instance: Some(id), ..
                } => {
                    self.pending.push(Pending {
                        expectation: Expectation {
                            group: action.group.clone(),
                            slot: action.slot.clone(),
                            expected: Expected::Create {
                                hash: action
                                    .hash
                                    .clone()
                                    .unwrap_or_else(|| crate::spec::SpecHash::from_tag("")),
                            },
                        },
                        instance: id.clone(),
                        until: now + EXPECT_FOR,
                    });
                    self.started.insert(slot_key(&action.group, &slot), now);
                    let stable = match spec.group(&action.group).map(|g| &g.update) {
                        Some(UpdatePolicy::Rolling(r)) => r.min_ready.to_std().max(STABLE_AFTER),
                        _ => STABLE_AFTER,
                    };
                    self.backoff.succeeded(&action.group, &slot, stable, now);
                }
                // Failed destroys back off too, so a provider that keeps refusing one is not
                // asked again in a tight loop.
                Outcome::Failed { error } => {
                    let wait = self.backoff.failed(&action.group, &slot, error, now);
                    self.journal.event(
                        "backoff",
                        &action.group,
                        &slot,
                        format!("next try in {}s", wait.as_secs()),
                    );
                }
                _ => {}
            }
        }
        if stopping {
            None
        } else {
            Some(false)
        }
    }

    /// Takes a spec committed to the store by `tend apply` (or `--watch`).
    fn adopt_stored_spec(&mut self) -> Result<(), ControllerError> {
        if let Some(applied) = self.store.last_applied()? {
            if applied.serial > self.serial {
                self.serial = applied.serial;
                if let Ok(mut spec) = self.spec.lock() {
                    *spec = applied.spec;
                }
                self.journal
                    .event("spec", "", "", format!("adopted serial {}", self.serial));
            }
        }
        Ok(())
    }

    /// Forgets expectations the provider now shows, or that ran out of time.
    fn settle_pending(&mut self, observed: &Observed) {
        let now = Instant::now();
        let seen: HashSet<&str> = observed.iter().map(|(_, i)| i.id.as_str()).collect();
        self.pending
            .retain(|p| now < p.until && !seen.contains(p.instance.as_str()));
    }

    fn count_instances(&self, observed: &Observed) {
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (_, i) in observed.iter() {
            let state = format!("{:?}", i.state).to_lowercase();
            *counts.entry((i.tags.group.clone(), state)).or_default() += 1;
        }
        self.journal.instances(counts);
    }

    fn write_report(&self, phase: Phase) {
        let spec = self.spec();
        let now = Instant::now();
        let report = Report {
            pid: std::process::id(),
            serial: self.serial,
            phase,
            failing: spec
                .groups
                .iter()
                .filter_map(|g| self.backoff.failing(&g.name).map(|w| (g.name.clone(), w)))
                .collect(),
            backoff: spec
                .groups
                .iter()
                .map(|g| (g.name.clone(), self.backoff.describe(&g.name, now)))
                .filter(|(_, b)| !b.is_empty())
                .collect(),
            at_ms: crate::store::now_ms(),
        };
        if self
            .report
            .lock()
            .map(|r| r.as_ref() != Some(&report))
            .unwrap_or(true)
        {
            report.write(&self.options.state_dir);
        }
        if let Ok(mut r) = self.report.lock() {
            *r = Some(report);
        }
    }

    fn file_times(&self) -> Vec<Option<std::time::SystemTime>> {
        self.options
            .reload
            .as_ref()
            .map(|r| {
                r.files
                    .iter()
                    .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// With `--watch`: evaluates the spec again when a file changed, and commits it.
    fn reload_if_changed(&mut self, times: &mut Vec<Option<std::time::SystemTime>>) -> bool {
        let now = self.file_times();
        if now == *times {
            return false;
        }
        *times = now;
        let Some(reload) = &self.options.reload else {
            return false;
        };
        match (reload.evaluate)() {
            Ok(spec) if spec.fingerprint() != self.spec().fingerprint() => {
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

/// Marks instances past their health threshold as unhealthy, so the planner heals them.
fn mark_unhealthy(observed: &mut Observed, unhealthy: &HashSet<String>) {
    if unhealthy.is_empty() {
        return;
    }
    for list in observed.by_provider.values_mut() {
        for i in list.iter_mut().filter(|i| unhealthy.contains(&i.id)) {
            if i.state.is_live() {
                i.state = InstanceState::Unhealthy;
            }
        }
    }
}

/// Marks instances that a provider event reported gone as dead, even while the provider's
/// listing still shows them running (Docker's list lags its event stream).
fn mark_gone(observed: &mut Observed, gone: &BTreeMap<String, Instant>) {
    if gone.is_empty() {
        return;
    }
    for list in observed.by_provider.values_mut() {
        for i in list.iter_mut().filter(|i| gone.contains_key(&i.id)) {
            i.state = InstanceState::Dead;
        }
    }
}

/// Sleeps up to `wait`; true when a stop request arrived.
async fn wait_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Waits for the next reason to reconcile: a provider event, a health threshold crossed,
/// a new spec in the store, a changed spec file, a backoff ending, the resync, or a stop.
async fn continue_or_wait(
    ctl: &mut Controller,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    events: &mut mpsc::Receiver<(String, ProviderEvent)>,
    file_times: &mut Vec<Option<std::time::SystemTime>>,
) {
    let resync_at = Instant::now() + ctl.options.resync;
    let retry_at = ctl.backoff.next_retry(Instant::now());
    let store_file = ctl.options.state_dir.join("state.json");
    let store_time = || {
        std::fs::metadata(&store_file)
            .and_then(|m| m.modified())
            .ok()
    };
    let stored = store_time();
    loop {
        let now = Instant::now();
        let mut wake = resync_at;
        if let Some(t) = ctl.backoff.next_retry(now) {
            wake = wake.min(t);
        }
        if let Some(t) = ctl.monitor.next_due() {
            wake = wake.min(t.max(now));
        }
        if !ctl.pending.is_empty() {
            wake = wake.min(now + Duration::from_millis(100));
        }
        let poll = now + Duration::from_millis(250);
        tokio::select! {
            _ = stop.changed() => return,
            event = events.recv() => {
                if let Some((provider, ProviderEvent::Gone { id })) = event {
                    ctl.journal.event("exited", "", "", format!("{provider} instance {id} is gone"));
                    ctl.gone.insert(id, Instant::now());
                }
                return;
            }
            _ = tokio::time::sleep_until(wake.min(poll).into()) => {}
        }
        let now = Instant::now();
        if now >= resync_at || retry_at.is_some_and(|t| now >= t) {
            return;
        }
        if !ctl.pending.is_empty() {
            return;
        }
        if ctl.monitor.next_due().is_some_and(|t| t <= now) {
            let crossed = ctl.monitor.probe_due().await;
            if !crossed.is_empty() {
                for (id, why) in crossed {
                    ctl.journal.event(
                        "unhealthy",
                        "",
                        "",
                        format!("instance {id} failed its health check: {why}"),
                    );
                }
                return;
            }
        }
        if store_time() != stored {
            return;
        }
        if ctl.reload_if_changed(file_times) {
            return;
        }
    }
}

//! Health checks of live instances, continuously: every instance is probed with the check
//! of the spec it was made from (its own hash), at that check's interval, and judged:
//!
//! - *starting* until its first probe passes (failures inside the grace period do not
//!   count), so an instance nobody has judged yet never counts as serving;
//! - *running* once it passed, as long as it fails fewer than `failures` probes in a row;
//! - *unhealthy* after `failures` failures in a row past the grace period.
//!
//! Probes run as tasks beside the reconciler, never in its way: a slow probe delays
//! nothing but its own verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::exec::{render_instance, Catalog, SecretSource};
use crate::health::{ProbeError, RenderedProbe};
use crate::provider::{probe_instance, InstanceState, Observed, ProviderSet};
use crate::spec::{Health, SpecHash};

/// Probes in flight at once, at most.
const CONCURRENT_PROBES: usize = 256;

struct Track {
    provider: String,
    group: String,
    slot: String,
    probe: RenderedProbe,
    health: Health,
    started_ms: u64,
    passed: bool,
    failures: u32,
    next: Instant,
    last_error: String,
    probing: bool,
    /// An action works on its slot: its verdict stands as it was, unprobed, until the
    /// action ends (a failed one leaves the instance as its checks last judged it).
    paused: bool,
    /// Another live instance has the address this probe reaches: a pass could be either's,
    /// so it counts for neither (a failure counts).
    shared: Option<String>,
}

impl Track {
    fn state(&self) -> InstanceState {
        if self.failures >= self.health.failures {
            InstanceState::Unhealthy
        } else if self.passed {
            InstanceState::Running
        } else {
            InstanceState::Starting
        }
    }
}

/// What a probe result changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The instance's state did not change.
    Same,
    /// It passed its check for the first time, or again after failing past the threshold.
    Passing,
    /// It crossed its failure threshold; the last error.
    Unhealthy(String),
}

/// The health of every live instance that has a check.
#[derive(Default)]
pub struct Monitor {
    tracks: BTreeMap<String, Track>,
    probes: JoinSet<(String, Result<(), ProbeError>)>,
    /// Instances whose action saw them healthy, not yet followed: they start as passed.
    vouched: BTreeSet<String>,
}

impl Monitor {
    /// Follows the live instances of `observed` that have a health check (rendered from the
    /// template of their own hash), and forgets the rest, but for instances of providers
    /// that could not be observed this time (their verdicts still stand). Instances in
    /// `busy` slots (group, slot) are left to the action working on them: it judges its new
    /// instance itself; an old one followed before keeps its verdict, unprobed, so a failed
    /// action leaves it judged as its checks last said (not as new).
    pub fn sync(
        &mut self,
        observed: &Observed,
        catalog: &Catalog,
        secret: &SecretSource,
        busy: &BTreeSet<(String, String)>,
        providers: &ProviderSet,
    ) {
        let spec = catalog.spec();
        let mut seen = BTreeSet::new();
        let empty = Observed::new(&spec.project);
        // Each version's group, looked up once (most instances share a few versions).
        let mut versions: BTreeMap<(&str, &str), Option<crate::spec::Group>> = BTreeMap::new();
        for (provider, instance) in observed.iter().filter(|(_, i)| i.state.is_live()) {
            let in_busy_slot =
                busy.contains(&(instance.tags.group.clone(), instance.tags.slot.clone()));
            if let Some(track) = self.tracks.get_mut(&instance.id) {
                track.paused = in_busy_slot;
                seen.insert(instance.id.clone());
                continue;
            }
            if in_busy_slot {
                continue;
            }
            let Some(group) = versions
                .entry((&instance.tags.group, &instance.tags.hash))
                .or_insert_with(|| {
                    let hash = SpecHash::from_tag(&instance.tags.hash);
                    catalog
                        .group(&instance.tags.group, Some(&hash))
                        .filter(|g| g.flavor.health.is_some())
                })
            else {
                continue;
            };
            let Some(health) = &group.flavor.health else {
                continue;
            };
            let slot = group.allocation.parse_slot(&instance.tags.slot);
            let Ok(mut rendered) = render_instance(
                &spec.project,
                group,
                &SpecHash::from_tag(&instance.tags.hash),
                &slot,
                &instance.tags.ports,
                &empty,
                secret.as_ref(),
            ) else {
                continue;
            };
            rendered.reach(group, &instance.ports);
            let Some(probe) = rendered.probe else {
                continue;
            };
            seen.insert(instance.id.clone());
            let passed = self.vouched.remove(&instance.id);
            self.tracks.insert(
                instance.id.clone(),
                Track {
                    provider: provider.to_owned(),
                    group: instance.tags.group.clone(),
                    slot: instance.tags.slot.clone(),
                    probe,
                    health: health.clone(),
                    started_ms: instance.started_at,
                    passed,
                    failures: 0,
                    next: Instant::now(),
                    last_error: String::new(),
                    probing: false,
                    paused: false,
                    shared: None,
                },
            );
        }
        self.tracks
            .retain(|id, t| seen.contains(id) || observed.unobserved.contains_key(&t.provider));
        // Instances of one group, by address (groups that check one shared thing, such as
        // a database's port, are not each other's doubles).
        let mut holders: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for (_, i) in observed.iter().filter(|(_, i)| i.state.is_live()) {
            if let Some(address) = &i.address {
                holders
                    .entry((i.tags.group.as_str(), address.as_str()))
                    .or_default()
                    .push(&i.id);
            }
        }
        for (id, track) in self.tracks.iter_mut() {
            // A provider that probes by id tells instances apart whatever their address.
            if providers
                .get(&track.provider)
                .is_ok_and(|p| p.probes_by_id())
            {
                track.shared = None;
                continue;
            }
            let address = match &track.probe {
                RenderedProbe::Http { address, .. } | RenderedProbe::Tcp { address } => address,
                RenderedProbe::Exec { .. } => continue,
            };
            track.shared = holders
                .get(&(track.group.as_str(), address.as_str()))
                .and_then(|ids| ids.iter().find(|other| **other != id.as_str()))
                .map(|other| (*other).to_owned());
        }
        if self.vouched.len() > 10_000 {
            self.vouched.clear();
        }
    }

    /// Sets the state of every live instance that has a check to its verdict.
    pub fn judge(&self, observed: &mut Observed) {
        for instance in observed.iter_mut().filter(|i| i.state.is_live()) {
            if let Some(track) = self.tracks.get(&instance.id) {
                instance.state = track.state();
            }
        }
    }

    /// Records that `id` passed its check (its action saw it healthy), so it counts as
    /// serving without waiting for the next probe.
    pub fn vouch(&mut self, id: &str) {
        match self.tracks.get_mut(id) {
            Some(track) => {
                track.passed = true;
                track.failures = 0;
            }
            None => {
                self.vouched.insert(id.to_owned());
            }
        }
    }

    /// Stops probing the instances of a slot (an action works on it now); their verdicts
    /// stand until the action ends.
    pub fn pause_slot(&mut self, group: &str, slot: &str) {
        for track in self
            .tracks
            .values_mut()
            .filter(|t| t.group == group && t.slot == slot)
        {
            track.paused = true;
        }
    }

    /// True when instance `id`'s checks are followed (its state is a verdict).
    pub fn follows(&self, id: &str) -> bool {
        self.tracks.contains_key(id)
    }

    /// The group and slot of a followed instance.
    pub fn place(&self, id: &str) -> Option<(String, String)> {
        self.tracks
            .get(id)
            .map(|t| (t.group.clone(), t.slot.clone()))
    }

    /// Starts the probes that are due.
    pub fn start_due(&mut self, providers: &ProviderSet, now: Instant) {
        self.start_due_of(providers, now, |_| true);
    }

    /// Starts the probes that are due of the instances `which` picks.
    fn start_due_of(
        &mut self,
        providers: &ProviderSet,
        now: Instant,
        which: impl Fn(&Track) -> bool,
    ) {
        let mut budget = CONCURRENT_PROBES.saturating_sub(self.probes.len());
        for (id, track) in self.tracks.iter_mut() {
            if budget == 0 {
                break;
            }
            if track.probing || track.paused || track.next > now || !which(track) {
                continue;
            }
            let Ok(provider) = providers.get(&track.provider) else {
                continue;
            };
            track.probing = true;
            budget -= 1;
            let (id, probe, timeout) = (
                id.clone(),
                track.probe.clone(),
                track.health.timeout.to_std(),
            );
            self.probes.spawn(async move {
                let result = probe_instance(provider.as_ref(), &id, &probe, timeout).await;
                (id, result)
            });
        }
    }

    /// The next probe result, when probes are running (waits forever otherwise).
    pub async fn next_result(&mut self) -> (String, Result<(), ProbeError>) {
        loop {
            match self.probes.join_next().await {
                Some(Ok(result)) => return result,
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Records a probe result; says whether the instance's verdict changed.
    pub fn record(&mut self, id: &str, result: Result<(), ProbeError>, clock: &Clock) -> Verdict {
        let Some(track) = self.tracks.get_mut(id) else {
            return Verdict::Same;
        };
        track.probing = false;
        track.next = clock.now()
            + track
                .health
                .interval
                .to_std()
                .max(Duration::from_millis(100));
        let before = track.state();
        if let (Some(other), Ok(())) = (&track.shared, &result) {
            // A pass may be the other instance's answer: not counted. A failure counts:
            // nothing there answers for either.
            track.last_error = format!(
                "its address is also instance {other}'s: a probe there cannot tell them apart"
            );
            return Verdict::Same;
        }
        match result {
            Ok(()) => {
                track.passed = true;
                track.failures = 0;
            }
            Err(e) => {
                let in_grace = !track.passed
                    && clock.epoch_ms() < track.started_ms + track.health.grace_period.as_millis();
                track.last_error = e.to_string();
                if !in_grace {
                    track.failures += 1;
                }
            }
        }
        match (before, track.state()) {
            (a, b) if a == b => Verdict::Same,
            (_, InstanceState::Unhealthy) => Verdict::Unhealthy(track.last_error.clone()),
            (_, InstanceState::Running) => Verdict::Passing,
            _ => Verdict::Same,
        }
    }

    /// When the next probe is due, if any is waiting (a paused track waits for no time).
    pub fn next_due(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter(|t| !t.probing && !t.paused)
            .map(|t| t.next)
            .min()
    }

    /// True while some live instance with a check has not been judged running or unhealthy
    /// (and can be).
    pub fn undecided(&self) -> bool {
        // One whose address another instance has cannot be decided by waiting.
        self.tracks
            .values()
            .any(|t| t.state() == InstanceState::Starting && t.shared.is_none() && !t.paused)
    }

    /// Probes every followed instance until it has a verdict, for commands that look once
    /// (`plan`, `status`, `apply` before it asks): once for most; an instance that fails
    /// past its grace period is probed again at its interval until it passes or reaches
    /// its failure threshold, so the look says *unhealthy* exactly when a controller would.
    /// That costs at most `failures` intervals, and only when something fails.
    pub async fn probe_all(&mut self, providers: &ProviderSet, clock: &Clock) {
        let failing = |t: &Track| t.failures > 0 && t.failures < t.health.failures && !t.paused;
        let mut first = true;
        loop {
            if first {
                self.start_due(providers, clock.now());
                first = false;
            } else {
                let Some(next) = self
                    .tracks
                    .values()
                    .filter(|t| failing(t))
                    .map(|t| t.next)
                    .min()
                else {
                    return;
                };
                tokio::time::sleep_until(next).await;
                self.start_due_of(providers, clock.now(), failing);
            }
            if self.probes.is_empty() {
                return;
            }
            while let Some(joined) = self.probes.join_next().await {
                if let Ok((id, result)) = joined {
                    self.record(&id, result, clock);
                }
            }
        }
    }

    /// The last probe error of `id`, if its last probe failed.
    pub fn last_error(&self, id: &str) -> Option<&str> {
        self.tracks
            .get(id)
            .filter(|t| t.failures > 0 || !t.passed)
            .map(|t| t.last_error.as_str())
            .filter(|e| !e.is_empty())
    }
}

//! Continuous health checks of live instances: an instance that fails `failures` probes in
//! a row after its grace period is unhealthy, and the planner heals it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::exec::{render_instance, SecretSource};
use crate::health::{probe, RenderedProbe};
use crate::provider::Observed;
use crate::spec::{Health, Spec};
use crate::store::now_ms;

struct Track {
    probe: RenderedProbe,
    health: Health,
    started_ms: u64,
    failures: u32,
    next: Instant,
    last_error: String,
}

/// Health state of every live instance with a health check.
#[derive(Default)]
pub struct Monitor {
    tracks: HashMap<String, Track>,
}

impl Monitor {
    /// Follows the live instances of `observed` that have a health check; forgets the rest.
    pub fn sync(&mut self, spec: &Spec, observed: &Observed, secret: &SecretSource) {
        let mut seen = HashSet::new();
        for (_, instance) in observed.iter().filter(|(_, i)| i.state.is_live()) {
            let Some(group) = spec.group(&instance.tags.group) else {
                continue;
            };
            let Some(health) = &group.flavor.health else {
                continue;
            };
            seen.insert(instance.id.clone());
            if self.tracks.contains_key(&instance.id) {
                continue;
            }
            let slot = group.allocation.parse_slot(&instance.tags.slot);
            let empty = Observed::new(&spec.project);
            let Ok(rendered) =
                render_instance(&spec.project, group, &slot, &empty, secret.as_ref())
            else {
                continue;
            };
            let Some(probe) = rendered.probe else {
                continue;
            };
            self.tracks.insert(
                instance.id.clone(),
                Track {
                    probe,
                    health: health.clone(),
                    started_ms: instance.started_at,
                    failures: 0,
                    next: Instant::now(),
                    last_error: String::new(),
                },
            );
        }
        self.tracks.retain(|id, _| seen.contains(id));
    }

    /// Probes every instance that is due; returns the ones that just crossed their failure
    /// threshold, with the last error.
    pub async fn probe_due(&mut self) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut running = JoinSet::new();
        for (id, track) in self.tracks.iter_mut().filter(|(_, t)| t.next <= now) {
            track.next = now
                + track
                    .health
                    .interval
                    .to_std()
                    .max(Duration::from_millis(100));
            let (id, p, timeout) = (
                id.clone(),
                track.probe.clone(),
                track.health.timeout.to_std(),
            );
            running.spawn(async move { (id, probe(&p, timeout).await) });
        }
        let mut crossed = Vec::new();
        while let Some(Ok((id, result))) = running.join_next().await {
            let Some(track) = self.tracks.get_mut(&id) else {
                continue;
            };
            match result {
                Ok(()) => track.failures = 0,
                Err(e) => {
                    let in_grace =
                        now_ms() < track.started_ms + track.health.grace_period.as_millis();
                    if in_grace {
                        continue;
                    }
                    track.failures += 1;
                    track.last_error = e.to_string();
                    if track.failures == track.health.failures {
                        crossed.push((id, track.last_error.clone()));
                    }
                }
            }
        }
        crossed
    }

    /// Instances past their failure threshold.
    pub fn unhealthy(&self) -> HashSet<String> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.failures >= t.health.failures)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When the next probe is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.tracks.values().map(|t| t.next).min()
    }
}

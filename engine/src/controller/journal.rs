//! What the controller did and how long it took: recent events (NDJSON, and a live stream)
//! and Prometheus metrics.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::reconcile::GroupPhase;

/// How many events are kept for `/events`.
const KEEP: usize = 1000;
/// Reconcile-duration histogram buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// One thing that happened.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What kind: `created`, `healed`, `replaced`, `destroyed`, `failed`, `backoff`,
    /// `unhealthy`, `exited`, `converged`, `spec`, `provider`.
    pub kind: String,
    /// The group, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The slot, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub slot: String,
    /// In words.
    pub message: String,
}

#[derive(Default)]
struct Metrics {
    counters: BTreeMap<&'static str, u64>,
    buckets: [u64; BUCKETS.len()],
    reconcile_count: u64,
    reconcile_sum: f64,
    last_convergence_ms: u64,
    instances: BTreeMap<(String, String), usize>,
    phases: BTreeMap<String, &'static str>,
}

/// Events and metrics, shared by the controller loop and the HTTP endpoint.
pub struct Journal {
    recent: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<String>,
    metrics: Mutex<Metrics>,
    clock: Clock,
    log: bool,
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new(Clock::real(), true)
    }
}

impl Journal {
    /// A journal stamping events with `clock`; with `log`, each event is also a line on
    /// stderr (dropped quietly when stderr is closed).
    pub fn new(clock: Clock, log: bool) -> Journal {
        Journal {
            recent: Mutex::new(VecDeque::new()),
            live: broadcast::channel(1024).0,
            metrics: Mutex::new(Metrics::default()),
            clock,
            log,
        }
    }

    /// Records an event, counts it, logs it on stderr, and sends it to live streams.
    pub fn event(&self, kind: &str, group: &str, slot: &str, message: String) {
        let event = Event {
            at_ms: self.clock.epoch_ms(),
            kind: kind.to_owned(),
            group: group.to_owned(),
            slot: slot.to_owned(),
            message,
        };
        let line = serde_json::to_string(&event).unwrap_or_default();
        let target = match (group, slot) {
            ("", _) => String::new(),
            (g, "") => format!(" {g}"),
            (g, s) => format!(" {g}/{s}"),
        };
        if self.log {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{kind}{target}: {}", event.message);
        }
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back(event);
            while recent.len() > KEEP {
                recent.pop_front();
            }
        }
        if let Ok(mut m) = self.metrics.lock() {
            let counter = match kind {
                "healed" => Some("tend_heals_total"),
                "failed" => Some("tend_failures_total"),
                "created" => Some("tend_creates_total"),
                "replaced" => Some("tend_replaces_total"),
                "destroyed" => Some("tend_destroys_total"),
                _ => None,
            };
            if let Some(name) = counter {
                *m.counters.entry(name).or_default() += 1;
            }
        }
        let _ = self.live.send(line);
    }

    /// Records how long one observe-plan-apply round took, and whether it converged.
    pub fn reconciled(&self, took: Duration, converged: bool) {
        if let Ok(mut m) = self.metrics.lock() {
            let secs = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    m.buckets[i] += 1;
                }
            }
            m.reconcile_count += 1;
            m.reconcile_sum += secs;
            if converged {
                m.last_convergence_ms = self.clock.epoch_ms();
            }
        }
    }

    /// Sets the instance counts by group and state.
    pub fn instances(&self, counts: BTreeMap<(String, String), usize>) {
        if let Ok(mut m) = self.metrics.lock() {
            m.instances = counts;
        }
    }

    /// Sets where each group stands.
    pub fn phases(&self, phases: &BTreeMap<String, GroupPhase>) {
        if let Ok(mut m) = self.metrics.lock() {
            m.phases = phases.iter().map(|(g, p)| (g.clone(), p.name())).collect();
        }
    }

    /// Recent events as NDJSON.
    pub fn recent_ndjson(&self) -> String {
        let recent = self.recent.lock().map(|r| r.clone()).unwrap_or_default();
        recent
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|l| l + "\n")
            .collect()
    }

    /// New events as they happen, as NDJSON lines.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.live.subscribe()
    }

    /// Metrics in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let Ok(m) = self.metrics.lock() else {
            return out;
        };
        let _ = writeln!(out, "# HELP tend_instances Instances by group and state.");
        let _ = writeln!(out, "# TYPE tend_instances gauge");
        for ((group, state), n) in &m.instances {
            let _ = writeln!(
                out,
                "tend_instances{{group=\"{group}\",state=\"{state}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tend_group_phase Where each group stands: 1 for its phase, 0 for the others."
        );
        let _ = writeln!(out, "# TYPE tend_group_phase gauge");
        for (group, current) in &m.phases {
            for phase in GroupPhase::NAMES {
                let on = u8::from(*current == phase);
                let _ = writeln!(
                    out,
                    "tend_group_phase{{group=\"{group}\",phase=\"{phase}\"}} {on}"
                );
            }
        }
        for name in [
            "tend_heals_total",
            "tend_failures_total",
            "tend_creates_total",
            "tend_replaces_total",
            "tend_destroys_total",
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", m.counters.get(name).copied().unwrap_or(0));
        }
        let _ = writeln!(
            out,
            "# HELP tend_reconcile_duration_seconds Time of one observe-plan-apply round."
        );
        let _ = writeln!(out, "# TYPE tend_reconcile_duration_seconds histogram");
        for (bound, count) in BUCKETS.iter().zip(m.buckets) {
            let _ = writeln!(
                out,
                "tend_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "tend_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.reconcile_count
        );
        let _ = writeln!(
            out,
            "tend_reconcile_duration_seconds_sum {}",
            m.reconcile_sum
        );
        let _ = writeln!(
            out,
            "tend_reconcile_duration_seconds_count {}",
            m.reconcile_count
        );
        let _ = writeln!(out, "# HELP tend_last_convergence_timestamp_seconds When the project last matched the spec.");
        let _ = writeln!(out, "# TYPE tend_last_convergence_timestamp_seconds gauge");
        let _ = writeln!(
            out,
            "tend_last_convergence_timestamp_seconds {}",
            m.last_convergence_ms as f64 / 1000.0
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_counted_and_exposed() {
        let j = Journal::new(Clock::real(), false);
        let mut live = j.subscribe();
        j.event("healed", "web", "1", "instance is dead".into());
        j.event("failed", "web", "2", "exited".into());
        j.reconciled(Duration::from_millis(3), true);
        let mut counts = BTreeMap::new();
        counts.insert(("web".to_owned(), "running".to_owned()), 3);
        j.instances(counts);
        assert_eq!(j.recent_ndjson().lines().count(), 2);
        assert!(live
            .try_recv()
            .is_ok_and(|l| l.contains("\"kind\":\"healed\"")));
        let text = j.prometheus();
        assert!(text.contains("tend_heals_total 1\n"));
        assert!(text.contains("tend_failures_total 1\n"));
        assert!(text.contains("tend_instances{group=\"web\",state=\"running\"} 3\n"));
        assert!(text.contains("tend_reconcile_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("tend_reconcile_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        let mut phases = BTreeMap::new();
        phases.insert("web".to_owned(), GroupPhase::Paused { reason: "x".into() });
        j.phases(&phases);
        let text = j.prometheus();
        assert!(text.contains("tend_group_phase{group=\"web\",phase=\"paused\"} 1\n"));
        assert!(text.contains("tend_group_phase{group=\"web\",phase=\"converged\"} 0\n"));
    }
}

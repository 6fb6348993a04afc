//! What the controller did and how long it took: recent events (NDJSON, Server-Sent
//! Events, and a live stream), logs through `tracing`, and Prometheus metrics through
//! `prometheus-client`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::reconcile::GroupPhase;

/// How many events are kept for `/events`.
const KEEP: usize = 1000;
/// Reconcile-duration histogram buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];
/// Event kinds that call for an operator's eye: logged as warnings.
const WARNINGS: [&str; 9] = [
    "failed",
    "unhealthy",
    "exited",
    "paused",
    "rolled_back",
    "degraded",
    "failing",
    "provider",
    "store",
];

/// One thing that happened.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Its place in the journal, from 1: a stream resumes after the last one it had.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What kind: `started`, `waiting`, `created`, `healed`, `replaced`, `destroyed`,
    /// `failed`, `backoff`, `unhealthy`, `exited`, `paused`, `rolled_back`, `degraded`,
    /// `resumed`, `converged`, `spec`, `provider`, `leader`, `note`, `store`.
    pub kind: String,
    /// The group, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The slot, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub slot: String,
    /// The instance, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// In words.
    pub message: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupState {
    group: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPhaseLabels {
    group: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealReason {
    group: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Role {
    role: String,
}

/// The metrics, registered once in `registry`.
struct Metrics {
    /// Held while gauges are refilled and while the registry is encoded: a scrape never
    /// sees a family half refilled.
    refill: Mutex<()>,
    registry: Registry,
    counters: BTreeMap<&'static str, Counter>,
    heals_by_reason: Family<HealReason, Counter>,
    reconcile: Histogram,
    last_convergence: Gauge<f64, AtomicU64>,
    instances: Family<GroupState, Gauge>,
    phases: Family<GroupPhaseLabels, Gauge>,
    role: Family<Role, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let instances = Family::<GroupState, Gauge>::default();
        registry.register(
            "tend_instances",
            "Instances by group and state",
            instances.clone(),
        );
        let phases = Family::<GroupPhaseLabels, Gauge>::default();
        registry.register(
            "tend_group_phase",
            "Where each group stands: 1 for its phase, 0 for the others",
            phases.clone(),
        );
        let mut counters = BTreeMap::new();
        for (kind, name, help) in [
            (
                "healed",
                "tend_heals",
                "Dead or unhealthy instances replaced",
            ),
            ("failed", "tend_failures", "Actions that failed"),
            (
                "created",
                "tend_creates",
                "Instances created in empty slots",
            ),
            ("replaced", "tend_replaces", "Outdated instances replaced"),
            ("destroyed", "tend_destroys", "Instances destroyed"),
        ] {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counters.insert(kind, counter);
        }
        let heals_by_reason = Family::<HealReason, Counter>::default();
        registry.register(
            "tend_heals_by_reason",
            "Heals by group and why: dead, unhealthy, oom, tainted, orphaned",
            heals_by_reason.clone(),
        );
        let reconcile = Histogram::new(BUCKETS);
        registry.register(
            "tend_reconcile_duration_seconds",
            "Time of one observe-plan-apply round",
            reconcile.clone(),
        );
        let last_convergence = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "tend_last_convergence_timestamp_seconds",
            "When the project last matched the spec",
            last_convergence.clone(),
        );
        let role = Family::<Role, Gauge>::default();
        registry.register(
            "tend_replica_role",
            "This replica's role: 1 for the role it has now, 0 for the other",
            role.clone(),
        );
        Metrics {
            refill: Mutex::new(()),
            registry,
            counters,
            heals_by_reason,
            reconcile,
            last_convergence,
            instances,
            phases,
            role,
        }
    }
}

/// Events and metrics, shared by the controller loop and the HTTP endpoint.
pub struct Journal {
    /// Tells this journal's event ids from another's: when it was made, in ms.
    mark: String,
    recent: Mutex<VecDeque<Event>>,
    seq: AtomicU64,
    live: broadcast::Sender<Event>,
    metrics: Metrics,
    clock: Clock,
    log: bool,
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new(Clock::real(), true)
    }
}

impl Journal {
    /// A journal stamping events with `clock`; with `log`, each event is also logged
    /// through `tracing` (target `tend::controller`).
    pub fn new(clock: Clock, log: bool) -> Journal {
        Journal {
            mark: clock.epoch_ms().to_string(),
            recent: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            live: broadcast::channel(1024).0,
            metrics: Metrics::new(),
            clock,
            log,
        }
    }

    /// What tells this journal's events from another's (a restarted controller's).
    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// Records an event, counts it, logs it, and sends it to live streams.
    pub fn event(&self, kind: &str, group: &str, slot: &str, message: String) {
        self.instance_event(kind, group, slot, "", message);
    }

    /// [`Journal::event`] about one instance.
    pub fn instance_event(
        &self,
        kind: &str,
        group: &str,
        slot: &str,
        instance: &str,
        message: String,
    ) {
        // Numbered, kept and sent under one lock: streams see events in their order. The
        // log line is written after it is let go: a stderr that blocks never holds up
        // `/events`.
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        let event = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at_ms: self.clock.epoch_ms(),
            kind: kind.to_owned(),
            group: group.to_owned(),
            slot: slot.to_owned(),
            instance: instance.to_owned(),
            message,
        };
        recent.push_back(event.clone());
        while recent.len() > KEEP {
            recent.pop_front();
        }
        let message = event.message.clone();
        let _ = self.live.send(event);
        drop(recent);
        if let Some(counter) = self.metrics.counters.get(kind) {
            counter.inc();
        }
        if self.log {
            if WARNINGS.contains(&kind) {
                tracing::warn!(target: "tend::controller", group, slot, instance, action = kind, "{message}");
            } else {
                tracing::info!(target: "tend::controller", group, slot, instance, action = kind, "{message}");
            }
        }
    }

    /// Counts a heal of `group` by why it was needed.
    pub fn healed_because(&self, group: &str, reason: &str) {
        self.metrics
            .heals_by_reason
            .get_or_create(&HealReason {
                group: group.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records how long one observe-plan-apply round took, and whether it converged.
    pub fn reconciled(&self, took: Duration, converged: bool) {
        self.metrics.reconcile.observe(took.as_secs_f64());
        if converged {
            self.metrics
                .last_convergence
                .set(self.clock.epoch_ms() as f64 / 1000.0);
        }
    }

    /// Sets the instance counts by group and state.
    pub fn instances(&self, counts: BTreeMap<(String, String), usize>) {
        let _refill = self.metrics.refill.lock();
        let family = &self.metrics.instances;
        family.clear();
        for ((group, state), n) in counts {
            family
                .get_or_create(&GroupState { group, state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets where each group stands.
    pub fn phases(&self, phases: &BTreeMap<String, GroupPhase>) {
        let _refill = self.metrics.refill.lock();
        let family = &self.metrics.phases;
        family.clear();
        for (group, current) in phases {
            for phase in GroupPhase::NAMES {
                let labels = GroupPhaseLabels {
                    group: group.clone(),
                    phase: phase.to_owned(),
                };
                family
                    .get_or_create(&labels)
                    .set(i64::from(current.name() == phase));
            }
        }
    }

    /// Sets this controller's role: `leader` or `standby`. A standby exports no instance
    /// counts or phases of its own: summed over replicas, only the leader's count.
    pub fn role(&self, leading: bool) {
        let _refill = self.metrics.refill.lock();
        if !leading {
            self.metrics.instances.clear();
            self.metrics.phases.clear();
        }
        for (role, on) in [("leader", leading), ("standby", !leading)] {
            self.metrics
                .role
                .get_or_create(&Role {
                    role: role.to_owned(),
                })
                .set(i64::from(on));
        }
    }

    /// Recent events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Recent events as NDJSON.
    pub fn recent_ndjson(&self) -> String {
        self.recent()
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|l| l + "\n")
            .collect()
    }

    /// New events as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Metrics in the Prometheus (OpenMetrics) text format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let _refill = self.metrics.refill.lock();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry);
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
            .is_ok_and(|e| e.kind == "healed" && e.seq == 1));
        assert!(j.recent_ndjson().contains("\"seq\":2,"));
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

        j.healed_because("web", "unhealthy");
        j.role(false);
        let text = j.prometheus();
        assert!(text.contains("tend_heals_by_reason_total{group=\"web\",reason=\"unhealthy\"} 1\n"));
        assert!(text.contains("tend_replica_role{role=\"standby\"} 1\n"));
        assert!(text.contains("tend_replica_role{role=\"leader\"} 0\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let j = Journal::new(Clock::real(), false);
        let mut counts = BTreeMap::new();
        counts.insert(("we\"b\\x\ny".to_owned(), "running".to_owned()), 1);
        j.instances(counts);
        let text = j.prometheus();
        assert!(
            text.contains(r#"tend_instances{group="we\"b\\x\ny",state="running"} 1"#),
            "{text}"
        );
    }
}

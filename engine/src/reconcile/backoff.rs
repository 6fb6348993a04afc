//! Per-slot exponential backoff and the group circuit breaker, so a bad config never turns
//! into an endless create/destroy loop, while deaths from outside are healed at once.
//!
//! Two kinds of failure reach a slot: an action tend ran failed (the provider refused, the
//! new instance never turned healthy), or an instance tend made died soon after it
//! started. The first death of a slot is healed at once (a kill from outside looks the
//! same); the slot backs off only when its new instances keep dying. The group breaker
//! counts only failures that show tend's own new instances do not work: failed actions,
//! and deaths of slots that already failed.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// The first retry waits this long; each failure doubles it.
pub const FIRST: Duration = Duration::from_secs(1);
/// No retry waits longer than this.
pub const CAP: Duration = Duration::from_secs(300);
/// After this many failures in a row of tend's new instances in a group, the group is
/// failing: every retry waits the cap.
pub const BREAKER: u32 = 5;

/// What failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An action tend ran failed.
    Action,
    /// An instance tend made died soon after it started.
    QuickDeath,
}

/// One slot's failures.
#[derive(Clone, Debug)]
struct SlotState {
    failures: u32,
    retry_at: Instant,
    last_error: String,
    /// When a success is trusted enough to forget the failures.
    stable_at: Option<Instant>,
}

/// Backoff for every slot, by (group, slot).
#[derive(Debug, Default)]
pub struct Backoff {
    slots: BTreeMap<(String, String), SlotState>,
    /// Failures in a row of tend's new instances per group (reset when a slot of the group
    /// succeeds and holds).
    group_failures: BTreeMap<String, u32>,
}

/// The wait after `failures` failures: 1 s doubling up to 5 min.
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST * 2u32.pow(doublings)).min(CAP)
}

impl Backoff {
    /// Records a failure of a slot; returns how long until the next attempt.
    pub fn failed(
        &mut self,
        group: &str,
        slot: &str,
        kind: Failure,
        error: &str,
        now: Instant,
    ) -> Duration {
        let state = self
            .slots
            .entry((group.to_owned(), slot.to_owned()))
            .or_insert(SlotState {
                failures: 0,
                retry_at: now,
                last_error: String::new(),
                stable_at: None,
            });
        state.failures += 1;
        state.stable_at = None;
        state.last_error = error.to_owned();
        let counts = kind == Failure::Action || state.failures >= 2;
        let mut wait = match kind {
            Failure::Action => delay(state.failures),
            Failure::QuickDeath if state.failures == 1 => Duration::ZERO,
            Failure::QuickDeath => delay(state.failures - 1),
        };
        if counts {
            let group_failures = self.group_failures.entry(group.to_owned()).or_default();
            *group_failures += 1;
            if *group_failures >= BREAKER {
                wait = CAP;
            }
        }
        state.retry_at = now + wait;
        wait
    }

    /// Records a successful attempt: the slot's failures are forgotten once it holds until
    /// `stable_after` from now.
    pub fn succeeded(&mut self, group: &str, slot: &str, stable_after: Duration, now: Instant) {
        if let Some(state) = self.slots.get_mut(&(group.to_owned(), slot.to_owned())) {
            state.stable_at = Some(now + stable_after);
        }
    }

    /// Forgets failures of slots that stayed up past their stable time (`live` says which
    /// slots have a live instance now).
    pub fn settle(&mut self, now: Instant, live: impl Fn(&str, &str) -> bool) {
        let mut recovered = Vec::new();
        self.slots.retain(|(group, slot), state| {
            let holds = state.stable_at.is_some_and(|t| now >= t) && live(group, slot);
            if holds {
                recovered.push(group.clone());
            }
            !holds
        });
        for group in recovered {
            self.group_failures.remove(&group);
        }
    }

    /// Forgets every failure of `group` (its spec changed).
    pub fn forget_group(&mut self, group: &str) {
        self.slots.retain(|(g, _), _| g != group);
        self.group_failures.remove(group);
    }

    /// True when the slot must not be tried before its retry time.
    pub fn waiting(&self, group: &str, slot: &str, now: Instant) -> bool {
        self.slots
            .get(&(group.to_owned(), slot.to_owned()))
            .is_some_and(|s| s.stable_at.is_none() && now < s.retry_at)
    }

    /// The earliest retry time still ahead, to wake up then.
    pub fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.stable_at.is_none() && s.retry_at > now)
            .map(|s| s.retry_at)
            .min()
    }

    /// Why a group is failing, if it is.
    pub fn failing(&self, group: &str) -> Option<String> {
        let count = *self.group_failures.get(group)?;
        (count >= BREAKER).then(|| {
            let last = self
                .slots
                .iter()
                .filter(|((g, _), _)| g == group)
                .map(|(_, s)| s.last_error.as_str())
                .next_back()
                .unwrap_or("");
            format!(
                "{count} failures in a row; retrying every {}s; last: {last}",
                CAP.as_secs()
            )
        })
    }

    /// Slots waiting, with when and why, per group.
    pub fn describe(&self, group: &str, now: Instant) -> BTreeMap<String, String> {
        self.slots
            .iter()
            .filter(|((g, _), s)| g == group && s.stable_at.is_none() && s.retry_at > now)
            .map(|((_, slot), s)| {
                let wait = s.retry_at.saturating_duration_since(now).as_secs_f64();
                let why = format!(
                    "{} failures, retry in {wait:.0}s: {}",
                    s.failures, s.last_error
                );
                (slot.clone(), why)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_one_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|f| delay(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn a_group_whose_actions_keep_failing_waits_the_cap_until_a_slot_holds() {
        let t = Instant::now();
        let mut b = Backoff::default();
        for i in 0..BREAKER - 1 {
            assert!(
                b.failed("web", "0", Failure::Action, "exited", t) < CAP,
                "failure {i}"
            );
        }
        assert_eq!(b.failing("web"), None);
        assert_eq!(b.failed("web", "0", Failure::Action, "exited", t), CAP);
        assert!(b
            .failing("web")
            .is_some_and(|w| w.contains("5 failures in a row")));
        assert!(b.waiting("web", "0", t + Duration::from_secs(10)));
        assert_eq!(b.next_retry(t), Some(t + CAP));

        b.succeeded("web", "0", Duration::from_secs(10), t);
        assert!(!b.waiting("web", "0", t));
        b.settle(t + Duration::from_secs(5), |_, _| true);
        assert!(b.failing("web").is_some(), "forgot before the success held");
        b.settle(t + Duration::from_secs(11), |_, _| true);
        assert_eq!(b.failing("web"), None);
        assert!(b.describe("web", t).is_empty());
    }

    #[test]
    fn deaths_of_many_slots_heal_at_once_and_never_trip_the_breaker() {
        let t = Instant::now();
        let mut b = Backoff::default();
        for slot in 0..20 {
            let wait = b.failed("web", &slot.to_string(), Failure::QuickDeath, "killed", t);
            assert_eq!(wait, Duration::ZERO, "slot {slot}");
            assert!(!b.waiting("web", &slot.to_string(), t));
        }
        assert_eq!(b.failing("web"), None);
    }

    #[test]
    fn a_slot_whose_instances_keep_dying_backs_off_from_its_second_death() {
        let t = Instant::now();
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..5)
            .map(|_| {
                b.failed("web", "0", Failure::QuickDeath, "exited", t)
                    .as_secs()
            })
            .collect();
        // The fifth death is the fourth that counts against the group: not failing yet.
        assert_eq!(waits, [0, 1, 2, 4, 8]);
        assert_eq!(b.failing("web"), None);
        assert_eq!(
            b.failed("web", "0", Failure::QuickDeath, "exited", t),
            CAP,
            "the breaker trips on the fifth counted failure"
        );
    }
}

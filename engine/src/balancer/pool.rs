//! One group's rotation: the instances a balancer may send new connections to, with the
//! connections each holds, and the instances being drained.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::spec::{Expose, Strategy};

/// How long an instance admitted by its action stays in rotation without a round seeing it
/// (the provider's listing may lag behind the action).
const ADMITTED_FOR: Duration = Duration::from_secs(10);

/// Open connections of one instance, counted while they last.
#[derive(Clone, Debug, Default)]
pub struct Open(Arc<AtomicUsize>);

impl Open {
    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one more connection until the guard is dropped.
    fn hold(&self) -> OpenGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        OpenGuard(self.clone())
    }
}

/// One open connection to an instance; dropping it counts the connection closed.
#[derive(Debug)]
pub struct OpenGuard(Open);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Backend {
    id: String,
    address: SocketAddr,
    open: Open,
    admitted: Option<Instant>,
}

#[derive(Debug, Default)]
struct Rotation {
    backends: Vec<Backend>,
    draining: BTreeMap<String, Open>,
}

/// An instance picked for a new connection.
#[derive(Debug)]
pub struct Picked {
    /// Its id.
    pub id: String,
    /// Where to connect.
    pub address: SocketAddr,
    /// Counts the connection as open on it while held.
    pub guard: OpenGuard,
}

/// What a round saw of one instance of the group.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its id.
    pub id: String,
    /// Where the balancer reaches it, when known.
    pub address: Option<SocketAddr>,
    /// True when it is live and healthy (judged by its checks, or without any).
    pub serving: bool,
    /// True when it is live and not judged unhealthy: one already in rotation stays.
    pub fine: bool,
}

/// The rotation of one exposed group.
#[derive(Debug)]
pub struct Pool {
    expose: Mutex<Expose>,
    rotation: Mutex<Rotation>,
    turn: AtomicUsize,
    changed: Notify,
}

impl Pool {
    /// An empty rotation for `expose`.
    pub fn new(expose: Expose) -> Pool {
        Pool {
            expose: Mutex::new(expose),
            rotation: Mutex::new(Rotation::default()),
            turn: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    /// The balancer's settings.
    pub fn expose(&self) -> Expose {
        self.expose
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes new settings: the rotation, its open connections and the instances draining
    /// stay as they are.
    pub fn set_expose(&self, expose: Expose) {
        *self.expose.lock().unwrap_or_else(|e| e.into_inner()) = expose;
    }

    /// True when no connection through this rotation is open.
    pub fn idle(&self) -> bool {
        self.open().values().all(|n| *n == 0)
    }

    fn lock(&self) -> MutexGuard<'_, Rotation> {
        // A panic while the lock was held cannot leave the rotation half changed: every
        // change is one push, retain or insert.
        self.rotation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids in rotation, in order.
    pub fn in_rotation(&self) -> Vec<String> {
        self.lock().backends.iter().map(|b| b.id.clone()).collect()
    }

    /// Open connections of each instance in rotation or draining.
    pub fn open(&self) -> BTreeMap<String, usize> {
        let rotation = self.lock();
        rotation
            .backends
            .iter()
            .map(|b| (b.id.clone(), b.open.count()))
            .chain(
                rotation
                    .draining
                    .iter()
                    .map(|(id, o)| (id.clone(), o.count())),
            )
            .collect()
    }

    /// Puts a new instance in rotation: its action saw it healthy.
    pub fn admit(&self, id: &str, address: SocketAddr) {
        let mut rotation = self.lock();
        if rotation.draining.contains_key(id) {
            return;
        }
        match rotation.backends.iter_mut().find(|b| b.id == id) {
            Some(b) => b.address = address,
            None => rotation.backends.push(Backend {
                id: id.to_owned(),
                address,
                open: Open::default(),
                admitted: Some(Instant::now()),
            }),
        }
        drop(rotation);
        self.changed.notify_waiters();
    }

    /// Brings the rotation in line with what a round saw: serving instances join, those
    /// gone or judged unhealthy leave, those draining stay out. When the round could not see
    /// every provider (`complete` false), an instance it did not see is not taken for gone.
    pub fn sync(&self, seen: &[Seen], complete: bool) {
        let now = Instant::now();
        let mut rotation = self.lock();
        let by_id: BTreeMap<&str, &Seen> = seen.iter().map(|s| (s.id.as_str(), s)).collect();
        rotation
            .backends
            .retain_mut(|b| match by_id.get(b.id.as_str()) {
                Some(s) if s.fine => {
                    if let Some(a) = s.address {
                        b.address = a;
                    }
                    b.admitted = None;
                    true
                }
                Some(_) => false,
                None => {
                    !complete
                        || b.admitted
                            .is_some_and(|at| now.saturating_duration_since(at) < ADMITTED_FOR)
                }
            });
        let present: BTreeSet<String> = rotation.backends.iter().map(|b| b.id.clone()).collect();
        for s in seen {
            let Some(address) = s.address else { continue };
            if s.serving && !present.contains(&s.id) && !rotation.draining.contains_key(&s.id) {
                rotation.backends.push(Backend {
                    id: s.id.clone(),
                    address,
                    open: Open::default(),
                    admitted: None,
                });
            }
        }
        rotation
            .draining
            .retain(|id, open| by_id.contains_key(id.as_str()) || open.count() > 0);
        drop(rotation);
        self.changed.notify_waiters();
    }

    /// Takes `id` out of rotation and waits, at most the drain timeout, until its open
    /// connections have ended.
    pub async fn drain(&self, id: &str) {
        let open = {
            let mut rotation = self.lock();
            let Some(at) = rotation.backends.iter().position(|b| b.id == id) else {
                // Not in rotation: still remember it, so no round puts it back.
                rotation.draining.insert(id.to_owned(), Open::default());
                return;
            };
            let backend = rotation.backends.remove(at);
            rotation
                .draining
                .insert(id.to_owned(), backend.open.clone());
            backend.open
        };
        let deadline = Instant::now() + self.expose().drain_timeout.to_std();
        while open.count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets `id` back into rotation at the next round (it was not stopped after all).
    pub fn undrain(&self, id: &str) {
        self.lock().draining.remove(id);
    }

    /// An instance for a new connection, other than those in `skip`; waits up to `wait`
    /// for one to join when none is in rotation.
    pub async fn pick(&self, skip: &[String], wait: Duration) -> Option<Picked> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if let Some(picked) = self.pick_now(skip) {
                return Some(picked);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn pick_now(&self, skip: &[String]) -> Option<Picked> {
        let rotation = self.lock();
        let candidates: Vec<&Backend> = rotation
            .backends
            .iter()
            .filter(|b| !skip.contains(&b.id))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let strategy = self
            .expose
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .strategy;
        let chosen = match strategy {
            Strategy::RoundRobin => {
                candidates[self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len()]
            }
            Strategy::LeastConnections => {
                let start = self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len();
                let mut best = candidates[start];
                for b in candidates.iter().cycle().skip(start).take(candidates.len()) {
                    if b.open.count() < best.open.count() {
                        best = b;
                    }
                }
                best
            }
        };
        Some(Picked {
            id: chosen.id.clone(),
            address: chosen.address,
            guard: chosen.open.hold(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(strategy: Strategy) -> Pool {
        Pool::new(Expose {
            listen: "127.0.0.1:1".into(),
            target: None,
            strategy,
            drain_timeout: crate::spec::Duration::from_millis(200),
        })
    }

    fn seen(id: &str, port: u16, serving: bool) -> Seen {
        Seen {
            id: id.into(),
            address: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            serving,
            fine: serving,
        }
    }

    #[tokio::test]
    async fn only_serving_instances_join_and_a_drained_one_never_comes_back() {
        let p = pool(Strategy::RoundRobin);
        p.sync(&[seen("a", 1, true), seen("b", 2, false)], true);
        assert_eq!(p.in_rotation(), ["a"]);
        p.drain("a").await;
        p.sync(&[seen("a", 1, true), seen("b", 2, true)], true);
        assert_eq!(p.in_rotation(), ["b"], "a drained instance stays out");
        p.undrain("a");
        p.sync(&[seen("a", 1, true), seen("b", 2, true)], true);
        assert_eq!(p.in_rotation(), ["b", "a"]);
        p.sync(&[seen("a", 1, true)], true);
        assert_eq!(p.in_rotation(), ["a"], "a gone instance leaves");
    }

    #[tokio::test]
    async fn a_round_that_could_not_see_every_provider_takes_nothing_out() {
        let p = pool(Strategy::RoundRobin);
        p.sync(&[seen("a", 1, true), seen("b", 2, true)], true);
        p.sync(&[seen("b", 2, true)], false);
        assert_eq!(p.in_rotation(), ["a", "b"]);
        p.sync(&[seen("b", 2, true)], true);
        assert_eq!(p.in_rotation(), ["b"]);
    }

    #[tokio::test]
    async fn drain_waits_for_open_connections_up_to_its_timeout() {
        let p = pool(Strategy::RoundRobin);
        p.sync(&[seen("a", 1, true)], true);
        let held = p.pick(&[], Duration::ZERO).await;
        assert_eq!(p.open().get("a"), Some(&1));
        let started = Instant::now();
        p.drain("a").await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(held);
        assert_eq!(p.open().get("a"), Some(&0));
        assert!(p.pick(&[], Duration::ZERO).await.is_none());
    }

    #[tokio::test]
    async fn least_connections_prefers_the_idle_instance() {
        let p = pool(Strategy::LeastConnections);
        p.sync(&[seen("a", 1, true), seen("b", 2, true)], true);
        // Load a with three connections while b has none: every new one goes to b until
        // they are even, whatever the turn says.
        let held: Vec<Picked> = (0..3)
            .filter_map(|_| p.pick_now(&["b".to_owned()]))
            .collect();
        assert!(held.iter().all(|x| x.id == "a"));
        let next: Vec<String> = (0..3)
            .filter_map(|_| p.pick_now(&[]))
            .map(|x| {
                let id = x.id.clone();
                std::mem::forget(x.guard);
                id
            })
            .collect();
        assert_eq!(next, ["b", "b", "b"]);
        drop(held);
    }
}
